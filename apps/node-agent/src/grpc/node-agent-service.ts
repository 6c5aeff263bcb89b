import { InvalidArgumentError, instanceStateToProto, workloadExtrasFromWire } from '@corral/domain';
import { implementServerStream, implementUnary } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { agentV1, type Resources } from '@corral/proto';
import type { DriverRegistry } from '../drivers/driver-registry';
import { wireExitCode, type WorkloadView } from '../workloads/workload-record';
import type { WorkloadSupervisor } from '../workloads/workload-supervisor';

export interface NodeAgentServiceDeps {
  /** The supervisor once the agent is ready; throws UnavailableError before. */
  supervisor(): WorkloadSupervisor;
  drivers: DriverRegistry;
  capacity(): Promise<Resources>;
  logger: Logger;
}

/** Grace period of StopWorkload when the caller gives none (proto: 0 means 10 s). */
export const DEFAULT_STOP_TIMEOUT_SECONDS = 10;
/** Longest grace period accepted: a stop must finish within a sane call deadline. */
export const MAX_STOP_TIMEOUT_SECONDS = 600;

/** Signals a caller may ask a stop to start with. */
const STOP_SIGNALS: ReadonlySet<string> = new Set(['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGHUP', 'SIGKILL', 'SIGUSR1', 'SIGUSR2']);

/** NodeAgentService: translation between the wire and the supervisor only. */
export function nodeAgentService(deps: NodeAgentServiceDeps) {
  return { ...unaryHandlers(deps), ...streamHandlers(deps) };
}

function streamHandlers(deps: NodeAgentServiceDeps) {
  return implementServerStream(
    agentV1.NodeAgentServiceService,
    {
      async *streamLogs(req, ctx) {
        const chunks = deps.supervisor().streamLogs(requireId(req.workloadId), { tailBytes: req.tailBytes, follow: req.follow, signal: ctx.signal });
        for await (const data of chunks) yield { data };
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
