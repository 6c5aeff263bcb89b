import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, instanceStateToProto, workloadExtrasFromWire } from '@corral/domain';
import {
  AsyncQueue,
  firstMessageOf,
  forwardRequests,
  implementBidiStream,
  implementClientStream,
  implementServerStream,
  implementUnary,
  uploadedChunks,
  type CallContext,
} from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { agentV1, type Resources } from '@corral/proto';
import { hasFiles, type Driver, type FilesCapability, type SnapshotProgress, type TaskHandle } from '../drivers/driver';
import type { DriverRegistry } from '../drivers/driver-registry';
import { openExecSession, type ExecLimits } from '../workloads/workload-exec';
import { wireExitCode, type WorkloadView } from '../workloads/workload-record';
import type { WorkloadSupervisor } from '../workloads/workload-supervisor';
import { importImageStream, listImages, type ImageImportLimits } from './image-import';
import { DEFAULT_PULL_SETTINGS, pullImageStream } from './image-pull';
import { relayProgress } from './progress-relay';
import type { PullSettings } from '../drivers/podman';

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
  /** Registry pulls: allowed and insecure registries, auth file dir, timeout; defaults in grpc/image-pull.ts. */
  imagePulls?: Partial<PullSettings>;
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

/** Exec output messages held for a slow reader before the command's pipes are paused (at most 16 × 64 KiB). */
export const EXEC_OUTPUT_HIGH_WATER_MARK = 16;

/** Grace period of StopWorkload when the caller gives none (proto: 0 means 10 s). */
export const DEFAULT_STOP_TIMEOUT_SECONDS = 10;
/** Longest grace period accepted: a stop must finish within a sane call deadline. */
export const MAX_STOP_TIMEOUT_SECONDS = 600;

/** Signals a caller may ask a stop to start with. */
const STOP_SIGNALS: ReadonlySet<string> = new Set(['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGKILL', 'SIGUSR1', 'SIGUSR2']);

/** NodeAgentService: translation between the wire and the supervisor only. */
export function nodeAgentService(deps: NodeAgentServiceDeps) {
  return { ...unaryHandlers(deps), ...streamHandlers(deps), ...duplexHandlers(deps), ...snapshotListHandlers(deps) };
}

/** ListSnapshots and DeleteSnapshot: the snapshots on this host's disk. */
function snapshotListHandlers(deps: NodeAgentServiceDeps) {
  return implementUnary(
    agentV1.NodeAgentServiceService,
    {
      async listSnapshots(req) {
        const snapshots = await deps.supervisor().listSnapshots(requireId(req.workloadId));
        return {
          snapshots: snapshots.map((s) => ({ snapshotId: s.snapshotId, sourceWorkloadId: s.sourceWorkloadId, createdAt: s.createdAt, sizeBytes: s.sizeBytes, driver: s.driver })),
        };
      },
      async deleteSnapshot(req) {
        if (!req.snapshotId) throw new InvalidArgumentError('snapshotId is required', { field: 'snapshotId' });
        return { deleted: await deps.supervisor().deleteSnapshot(requireId(req.workloadId), req.snapshotId) };
      },
    },
    deps.logger,
  );
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
          const header = await firstMessageOf(iterator, 'header', 'the header');
          if (header.mode > 0o7777) throw new InvalidArgumentError('mode must be permission bits (at most 0o7777)', { field: 'mode' });
          const { driver, handle } = filesOf(deps, header.workloadId, 'write files into');
          const content = uploadedChunks(iterator);
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
  const start = await firstMessageOf(iterator, 'start', 'start');
  const { driver, handle } = deps.supervisor().live(requireId(start.workloadId), 'exec into');
  const session = await openExecSession(
    driver,
    handle,
    start.command,
    { tty: start.tty, env: start.env, ...(start.workingDir ? { workingDir: start.workingDir } : {}) },
    limits,
  );
  if (start.tty && start.size && start.size.columns > 0 && start.size.rows > 0) session.resize?.(start.size.columns, start.size.rows);
  // The command's output waits here only until the call takes it: past EXEC_OUTPUT_HIGH_WATER_MARK
  // messages the session stops reading the command's pipes, so a slow reader blocks the command.
  const out = new AsyncQueue<ExecResponse>(undefined, {
    highWaterMark: EXEC_OUTPUT_HIGH_WATER_MARK,
    pause: () => session.pauseOutput?.(),
    resume: () => session.resumeOutput?.(),
  });
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
  // A failed request stream is a cancelled call: the finally below ends the command.
  void forwardRequests(
    iterator,
    ({ kind }) => {
      // Returned, so the next request is read only once the command's stdin has room.
      if (kind?.$case === 'stdin') return session.writeStdin(Buffer.from(kind.value));
      if (kind?.$case === 'stdinEof') session.closeStdin();
      else if (kind?.$case === 'resize') session.resize?.(kind.value.columns, kind.value.rows);
      return undefined;
    },
    { end: () => session.closeStdin() },
  );
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
      pullImage: (req, ctx) => pullImageStream(deps.drivers, { ...DEFAULT_PULL_SETTINGS, ...deps.imagePulls }, req, ctx.signal),
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
        const toWire = (p: SnapshotProgress) => ({
          status: p.status,
          transferredBytes: p.transferredBytes,
          totalBytes: p.totalBytes,
          remainingBytes: p.remainingBytes,
          elapsedMs: p.elapsedMs,
        });
        yield* relayProgress<agentV1.SnapshotWorkloadResponse>(async (report) => {
          const onProgress = (p: SnapshotProgress) => report({ kind: { $case: 'progress', value: toWire(p) } });
          const result = await deps.supervisor().snapshot(requireId(req.workloadId), onProgress, { leavePaused: req.leavePaused });
          return { kind: { $case: 'result', value: { snapshotId: result.snapshotId, bytes: result.bytes, durationMs: Math.round(result.durationMs) } } };
        });
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
      async listUnmanagedRuntimes() {
        const runtimes = await deps.supervisor().listUnmanaged();
        return {
          runtimes: runtimes.map((r) => ({ workloadId: r.workloadId, driver: r.driver, running: r.running, createdAt: r.createdAt, displayId: r.displayId })),
        };
      },
      async destroyUnmanagedRuntime(req) {
        return { removed: await deps.supervisor().destroyUnmanaged(requireId(req.workloadId)) };
      },
      async restartWorkload(req) {
        return { workload: toProto(await deps.supervisor().restart(requireId(req.workloadId))) };
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
