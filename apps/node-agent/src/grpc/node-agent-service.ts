import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, instanceStateToProto, workloadExtrasFromWire } from '@corral/domain';
import { AsyncQueue, implementBidiStream, implementClientStream, implementServerStream, implementUnary, type CallContext } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { agentV1, type Resources } from '@corral/proto';
import { hasFiles, type Driver, type FilesCapability, type SnapshotProgress, type TaskHandle } from '../drivers/driver';
import type { DriverRegistry } from '../drivers/driver-registry';
import { openExecSession, type ExecLimits } from '../workloads/workload-exec';
import { wireExitCode, type WorkloadView } from '../workloads/workload-record';
import type { WorkloadSupervisor } from '../workloads/workload-supervisor';
import { importImageStream, listImages, type ImageImportLimits } from './image-import';

export interface NodeAgentServiceDeps {
  /** The supervisor once the agent is ready; throws UnavailableError before. */
  supervisor(): WorkloadSupervisor;
  drivers: DriverRegistry;
  capacity(): Promise<Resources>;
  logger: Logger;
  /** Exec and file limits; defaults below. */
  limits?: Partial<AgentStreamLimits>;
  /** Image import limits and spool dir (the agent passes one under its state dir); defaults below. */
  images?: Partial<ImageImportLimits>;
}

export const DEFAULT_IMAGE_LIMITS: ImageImportLimits = {
  imageMaxBytes: 8 * 1024 * 1024 * 1024,
  spoolDir: join(tmpdir(), 'corral-image-imports'),
};

export interface AgentStreamLimits extends ExecLimits {
  /** Largest file WriteFile accepts. */
  fileMaxBytes: number;
}

export const DEFAULT_STREAM_LIMITS: AgentStreamLimits = {
  fileMaxBytes: 256 * 1024 * 1024,
  bufferedStdinMaxBytes: 1024 * 1024,
  bufferedTimeoutMs: 10 * 60_000,
};

/** Most a single message of a file or exec stream carries (gRPC's default cap is 4 MiB). */
export const STREAM_CHUNK_BYTES = 64 * 1024;

/** Grace period of StopWorkload when the caller gives none (proto: 0 means 10 s). */
export const DEFAULT_STOP_TIMEOUT_SECONDS = 10;
/** Longest grace period accepted: a stop must finish within a sane call deadline. */
export const MAX_STOP_TIMEOUT_SECONDS = 600;

/** Signals a caller may ask a stop to start with. */
const STOP_SIGNALS: ReadonlySet<string> = new Set(['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGKILL', 'SIGUSR1', 'SIGUSR2']);

/** NodeAgentService: translation between the wire and the supervisor only. */
export function nodeAgentService(deps: NodeAgentServiceDeps) {
  return { ...unaryHandlers(deps), ...streamHandlers(deps), ...duplexHandlers(deps) };
}

function filesOf(deps: NodeAgentServiceDeps, workloadId: string, what: string): { driver: Driver & FilesCapability; handle: TaskHandle } {
  const { driver, handle } = deps.supervisor().live(requireId(workloadId), what);
  if (!hasFiles(driver)) throw new FailedPreconditionError(`driver ${driver.name} cannot read or write files inside a workload`);
  return { driver, handle };
}

function duplexHandlers(deps: NodeAgentServiceDeps) {
  const limits = { ...DEFAULT_STREAM_LIMITS, ...deps.limits };
  return {
    ...implementBidiStream(
      agentV1.NodeAgentServiceService,
      {
        exec: (requests, ctx) => execStream(deps, limits, requests, ctx),
        importImage: (requests) => importImageStream(deps.drivers, { ...DEFAULT_IMAGE_LIMITS, ...deps.images }, requests),
      },
      deps.logger,
    ),
    ...implementClientStream(
      agentV1.NodeAgentServiceService,
      {
        async writeFile(requests) {
          const iterator = requests[Symbol.asyncIterator]();
          const first = await iterator.next();
          if (first.done || first.value.kind?.$case !== 'header') throw new InvalidArgumentError('the first message must be the header', { field: 'header' });
          const header = first.value.kind.value;
          if (header.mode > 0o7777) throw new InvalidArgumentError('mode must be permission bits (at most 0o7777)', { field: 'mode' });
          const { driver, handle } = filesOf(deps, header.workloadId, 'write files into');
          const content = (async function* () {
            for (;;) {
              const next = await iterator.next();
              // Without eof the upload was cut short (a cancelled call ends like a finished one here).
              if (next.done) throw new InvalidArgumentError('the upload ended before eof', { field: 'eof' });
              const kind = next.value.kind;
              if (kind?.$case === 'eof') return;
              if (kind?.$case !== 'chunk') throw new InvalidArgumentError('only content chunks may follow the header', { field: 'chunk' });
              yield Buffer.from(kind.value);
            }
          })();
          const written = await driver.writeFile(handle, header.path, content, { maxBytes: limits.fileMaxBytes, ...(header.mode ? { mode: header.mode } : {}) });
          return { bytes: written.bytes };
        },
      },
      deps.logger,
    ),
  };
}

type ExecRequest = agentV1.ExecRequest;
type ExecResponse = agentV1.ExecResponse;

/**
 * Exec as a bidirectional stream: the first message starts the command,
 * later ones feed it; output is sent as it comes and the exit code last.
 * The command is killed when the caller goes away before it has ended.
 */
async function* execStream(deps: NodeAgentServiceDeps, limits: ExecLimits, requests: AsyncIterable<ExecRequest>, ctx: CallContext): AsyncGenerator<ExecResponse> {
  const iterator = requests[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done || first.value.kind?.$case !== 'start') throw new InvalidArgumentError('the first message must be start', { field: 'start' });
  const start = first.value.kind.value;
  const { driver, handle } = deps.supervisor().live(requireId(start.workloadId), 'exec into');
  const session = await openExecSession(
    driver,
    handle,
    start.command,
    { tty: start.tty, env: start.env, ...(start.workingDir ? { workingDir: start.workingDir } : {}) },
    limits,
  );
  if (start.tty && start.size && start.size.columns > 0 && start.size.rows > 0) session.resize?.(start.size.columns, start.size.rows);
  const out = new AsyncQueue<ExecResponse>();
  out.push({ kind: { $case: 'started', value: {} } });
  session.onStdout((data) => {
    for (let i = 0; i < data.length; i += STREAM_CHUNK_BYTES) out.push({ kind: { $case: 'stdout', value: data.subarray(i, i + STREAM_CHUNK_BYTES) } });
  });
  session.onStderr((data) => {
    for (let i = 0; i < data.length; i += STREAM_CHUNK_BYTES) out.push({ kind: { $case: 'stderr', value: data.subarray(i, i + STREAM_CHUNK_BYTES) } });
  });
  let ended = false;
  session.exited.then(
    (exitCode) => {
      ended = true;
      out.push({ kind: { $case: 'exit', value: { exitCode } } });
      out.end();
    },
    (err: unknown) => {
      ended = true;
      out.fail(err);
    },
  );
  // Input is pumped beside the output; when the caller half-closes, stdin is closed.
  void (async () => {
    try {
      for (;;) {
        const next = await iterator.next();
        if (next.done) break;
        const kind = next.value.kind;
        if (kind?.$case === 'stdin') session.writeStdin(Buffer.from(kind.value));
        else if (kind?.$case === 'stdinEof') session.closeStdin();
        else if (kind?.$case === 'resize') session.resize?.(kind.value.columns, kind.value.rows);
      }
      session.closeStdin();
    } catch {
      // The call was cancelled: the finally below ends the command.
    }
  })();
  const onAbort = () => session.kill();
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  try {
    yield* out;
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    if (!ended) session.kill();
  }
}

function streamHandlers(deps: NodeAgentServiceDeps) {
  return implementServerStream(
    agentV1.NodeAgentServiceService,
    {
      async *streamLogs(req, ctx) {
        const chunks = deps.supervisor().streamLogs(requireId(req.workloadId), { tailBytes: req.tailBytes, follow: req.follow, signal: ctx.signal });
        for await (const data of chunks) yield { data };
      },
      async *readFile(req) {
        const { driver, handle } = filesOf(deps, req.workloadId, 'read files of');
        for await (const data of await driver.readFile(handle, req.path)) {
          for (let i = 0; i < data.length; i += STREAM_CHUNK_BYTES) yield { chunk: data.subarray(i, i + STREAM_CHUNK_BYTES) };
        }
      },
      async *snapshotWorkload(req) {
        const progress = new AsyncQueue<agentV1.SnapshotWorkloadResponse>();
        const toWire = (p: SnapshotProgress) => ({
          status: p.status,
          transferredBytes: p.transferredBytes,
          totalBytes: p.totalBytes,
          remainingBytes: p.remainingBytes,
          elapsedMs: p.elapsedMs,
        });
        deps
          .supervisor()
          .snapshot(requireId(req.workloadId), (p) => progress.push({ kind: { $case: 'progress', value: toWire(p) } }), { leavePaused: req.leavePaused })
          .then(
            (result) => {
              progress.push({ kind: { $case: 'result', value: { snapshotId: result.snapshotId, bytes: result.bytes, durationMs: Math.round(result.durationMs) } } });
              progress.end();
            },
            (err: unknown) => progress.fail(err),
          );
        yield* progress;
      },
    },
    deps.logger,
  );
}

function unaryHandlers(deps: NodeAgentServiceDeps) {
  return implementUnary(
    agentV1.NodeAgentServiceService,
    {
      async startWorkload(req) {
        const spec = req.spec;
        if (!spec) throw new InvalidArgumentError('spec is required', { field: 'spec' });
        const workload = await deps.supervisor().start({
          workloadId: spec.workloadId,
          name: spec.name,
          driver: spec.driver,
          command: spec.command,
          env: spec.env,
          labels: spec.labels,
          ...workloadExtrasFromWire(spec),
        });
        return { workload: toProto(workload) };
      },
      async stopWorkload(req) {
        const workloadId = requireId(req.workloadId);
        const signal = req.signal || 'SIGTERM';
        if (!STOP_SIGNALS.has(signal)) {
          throw new InvalidArgumentError(`signal must be one of ${[...STOP_SIGNALS].join(', ')}`, { field: 'signal' });
        }
        if (req.timeoutSeconds > MAX_STOP_TIMEOUT_SECONDS) {
          throw new InvalidArgumentError(`timeoutSeconds must be at most ${MAX_STOP_TIMEOUT_SECONDS}`, { field: 'timeoutSeconds' });
        }
        const workload = await deps.supervisor().stop(workloadId, {
          timeoutMs: (req.timeoutSeconds || DEFAULT_STOP_TIMEOUT_SECONDS) * 1000,
          signal: signal as NodeJS.Signals,
        });
        return { workload: toProto(workload) };
      },
      async destroyWorkload(req) {
        const workloadId = requireId(req.workloadId);
        if (req.timeoutSeconds > MAX_STOP_TIMEOUT_SECONDS) {
          throw new InvalidArgumentError(`timeoutSeconds must be at most ${MAX_STOP_TIMEOUT_SECONDS}`, { field: 'timeoutSeconds' });
        }
        const workload = await deps.supervisor().destroy(workloadId, {
          force: req.force,
          timeoutMs: (req.timeoutSeconds || DEFAULT_STOP_TIMEOUT_SECONDS) * 1000,
        });
        return { workload: workload ? toProto(workload) : undefined };
      },
      async restoreWorkload(req) {
        const spec = req.spec;
        if (!spec) throw new InvalidArgumentError('spec is required', { field: 'spec' });
        const workload = await deps.supervisor().restore(
          { workloadId: spec.workloadId, name: spec.name, driver: spec.driver, command: spec.command, env: spec.env, labels: spec.labels, ...workloadExtrasFromWire(spec) },
          { sourceWorkloadId: requireId(req.sourceWorkloadId), snapshotId: req.snapshotId, paused: req.paused },
        );
        return { workload: toProto(workload) };
      },
      async pauseWorkload(req) {
        return { workload: toProto(await deps.supervisor().pause(requireId(req.workloadId))) };
      },
      async resumeWorkload(req) {
        return { workload: toProto(await deps.supervisor().resume(requireId(req.workloadId))) };
      },
      async inspectWorkload(req) {
        return { workload: toProto(deps.supervisor().inspect(requireId(req.workloadId))) };
      },
      async listWorkloads() {
        return { workloads: deps.supervisor().list().map(toProto) };
      },
      async readLogs(req) {
        const chunk = await deps.supervisor().readLogs(requireId(req.workloadId), req.tailBytes);
        return { data: chunk.data, truncated: chunk.truncated };
      },
      async listDirectory(req) {
        const { driver, handle } = filesOf(deps, req.workloadId, 'list files of');
        const entries = await driver.listDirectory(handle, req.path);
        return {
          entries: entries.map((e) => ({ name: e.name, kind: e.kind, sizeBytes: e.sizeBytes, mode: e.mode, modifiedAt: e.modifiedAt })),
        };
      },
      async listImages(req) {
        return listImages(deps.drivers, req);
      },
      async fingerprint() {
        const [capacity, drivers] = await Promise.all([deps.capacity(), deps.drivers.fingerprints()]);
        return { capacity, drivers };
      },
    },
    deps.logger,
  );
}

function requireId(workloadId: string): string {
  if (!workloadId) throw new InvalidArgumentError('workloadId is required', { field: 'workloadId' });
  return workloadId;
}

export function toProto(view: WorkloadView): agentV1.AgentWorkload {
  return {
    workloadId: view.workloadId,
    driver: view.driver,
    state: instanceStateToProto(view.state),
    exited: view.exited,
    exitCode: wireExitCode(view),
    handle: view.handle ?? '',
    startedAt: view.startedAt,
    finishedAt: view.finishedAt,
    seq: view.seq,
    ports: view.ports.map((p) => ({ name: p.name, guestPort: p.guestPort, hostPort: p.hostPort, protocol: p.protocol })),
  };
}
