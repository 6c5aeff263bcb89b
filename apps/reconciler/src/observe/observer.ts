import {
  hostStatusFromProto,
  instanceStateFromProto,
  type DesiredWorkload,
  type HostStatus,
  type InstanceState,
  type ObservedHost,
} from '@corral/domain';
import type { PrismaClient, Workload as WorkloadRow } from '@corral/db';
import type { PromiseClient } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import type { hostRegistryV1 } from '@corral/proto';
import type { AgentClients } from './agent-clients';

/** Whether the agent keeps a record of a runtime (destroy it through DestroyWorkload) or only its drivers found it (DestroyUnmanagedRuntime). */
export type RuntimeKind = 'managed' | 'unmanaged';

export interface KnownHost {
  id: string;
  status: HostStatus;
  agentAddress: string;
  teamId: string | null;
}

export interface Observation {
  desired: DesiredWorkload[];
  observed: ObservedHost[];
  hosts: Map<string, KnownHost>;
  /** `${hostId}/${workloadId}` → how the host holds it. */
  runtimeKinds: Map<string, RuntimeKind>;
  /** Workload id → its team (for the audit trail's visibility). */
  teams: Map<string, string | null>;
}

const NEVER: DesiredWorkload['restart'] = { policy: 'never', maxAttempts: 0, delaySeconds: 0 };
const LIVE_ON_AGENT: ReadonlySet<InstanceState> = new Set(['provisioning', 'running', 'paused', 'stopping']);

/** The stored restart policy ({} means never). */
export function restartPolicyOf(row: Pick<WorkloadRow, 'restartPolicy'>): DesiredWorkload['restart'] {
  const raw = (row.restartPolicy ?? {}) as { policy?: unknown; maxAttempts?: unknown; delaySeconds?: unknown };
  if (raw.policy !== 'always' && raw.policy !== 'on-failure') return NEVER;
  return {
    policy: raw.policy,
    maxAttempts: typeof raw.maxAttempts === 'number' ? raw.maxAttempts : 0,
    delaySeconds: typeof raw.delaySeconds === 'number' ? raw.delaySeconds : 0,
  };
}

export function desiredOf(row: WorkloadRow): DesiredWorkload {
  return {
    workloadId: row.id,
    hostId: row.hostId ?? '',
    state: row.state as InstanceState,
    // updatedAt moves with every write of the row; for the states that
    // matter here (intents, missing, failed) that is when the state was entered.
    stateSince: row.updatedAt,
    restart: restartPolicyOf(row),
    restarts: row.restarts,
    ...(row.exitCode !== null ? { exitCode: row.exitCode } : {}),
  };
}

/**
 * What Corral wants (workload rows) and what the hosts have (each reachable
 * agent's records and labelled runtime objects), each host's report stamped
 * with the reconciler's own clock when it arrived.
 */
export class Observer {
  constructor(
    private readonly deps: {
      prisma: PrismaClient;
      hostRegistry: Pick<PromiseClient<hostRegistryV1.HostRegistryServiceClient>, 'listHosts'>;
      agents: AgentClients;
      logger: Logger;
      now?: () => Date;
    },
  ) {}

  async observe(): Promise<Observation> {
    const now = this.deps.now ?? (() => new Date());
    const { hosts: listed } = await this.deps.hostRegistry.listHosts({ teamId: '' });
    const hosts = new Map<string, KnownHost>(
      listed.map((h) => [h.id, { id: h.id, status: hostStatusFromProto(h.status), agentAddress: h.agentAddress, teamId: h.teamId || null }]),
    );
    const runtimeKinds = new Map<string, RuntimeKind>();
    const observed = await Promise.all(
      [...hosts.values()].map(async (host): Promise<ObservedHost> => {
        if (host.status !== 'online' && host.status !== 'draining') return { hostId: host.id, status: host.status, reportedAt: new Date(0), runtimes: [] };
        try {
          const agent = this.deps.agents.get(host);
          const [records, unmanaged] = await Promise.all([agent.listWorkloads({}), agent.listUnmanagedRuntimes({})]);
          const reportedAt = now();
          const runtimes: ObservedHost['runtimes'] = [];
          for (const w of records.workloads) {
            const state = instanceStateFromProto(w.state);
            if (state === 'retired') continue;
            runtimeKinds.set(`${host.id}/${w.workloadId}`, 'managed');
            runtimes.push({
              workloadId: w.workloadId,
              running: LIVE_ON_AGENT.has(state) && !w.exited,
              paused: state === 'paused',
              // Unknown age counts as young: the grace window must never be skipped by a missing time.
              createdAt: w.startedAt ?? w.finishedAt ?? reportedAt,
              ...(w.exited ? { exitCode: w.exitCode } : {}),
            });
          }
          for (const r of unmanaged.runtimes) {
            runtimeKinds.set(`${host.id}/${r.workloadId}`, 'unmanaged');
            runtimes.push({ workloadId: r.workloadId, running: r.running, createdAt: r.createdAt ?? reportedAt });
          }
          return { hostId: host.id, status: host.status, reportedAt, runtimes };
        } catch (err) {
          // No report: nothing on this host is judged this round.
          this.deps.logger.warn('could not list the runtimes of a host', { hostId: host.id, err });
          return { hostId: host.id, status: host.status, reportedAt: new Date(0), runtimes: [] };
        }
      }),
    );
    const reportedIds = [...new Set(observed.flatMap((h) => h.runtimes.map((r) => r.workloadId)))];
    // Everything not retired, and retired rows only where a host still has something of them.
    const rows = await this.deps.prisma.workload.findMany({
      where: { OR: [{ state: { not: 'retired' } }, { id: { in: reportedIds } }] },
    });
    const teams = new Map(rows.map((r) => [r.id, r.teamId]));
    return { desired: rows.map(desiredOf), observed, hosts, runtimeKinds, teams };
  }
}
