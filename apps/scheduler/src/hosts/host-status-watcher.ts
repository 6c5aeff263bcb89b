import { canTransition, hostStatusFromProto, instanceStateFromProto, type HostStatus, type InstanceState } from '@corral/domain';
import type { PrismaClient } from '@corral/db';
import { Topics, type EventBus, type EventSubscription } from '@corral/events';
import type { Logger } from '@corral/logging';
import type { eventsV1 } from '@corral/proto';
import type { AgentPool } from '../agents/agent-pool';
import type { WorkloadStore } from '../workloads/workload-store';
import type { HostDirectory } from './host-directory';

/** States a workload leaves for `missing` when its host is lost (the lifecycle allows exactly these). */
const LOSABLE: InstanceState[] = ['provisioning', 'running', 'paused', 'stopping'];

export interface HostStatusWatcherDeps {
  bus: Pick<EventBus, 'subscribe'>;
  prisma: PrismaClient;
  store: WorkloadStore;
  hosts: Pick<HostDirectory, 'get'>;
  logger: Logger;
}

/**
 * Marks the live workloads of a lost host `missing`. A control-plane
 * decision like any transition: it does not advance state_seq, so the
 * agent's next state report (a higher seq) still applies over it.
 */
export async function markHostWorkloadsMissing(prisma: PrismaClient, store: WorkloadStore, hostId: string, why: string): Promise<string[]> {
  const rows = await prisma.workload.findMany({ where: { hostId, state: { in: LOSABLE } }, select: { id: true } });
  const marked: string[] = [];
  for (const { id } of rows) if (await store.transition(id, LOSABLE, 'missing', why)) marked.push(id);
  return marked;
}

/**
 * Restores the `missing` workloads of a returned host to the live state its
 * heartbeat reports for them. Only from `missing`: anything an agent report
 * (seq-guarded) applied meanwhile is newer and stays. Only into a live
 * state: a heartbeat carries no exit code, and a terminal state written
 * here would make the agent's own report of that exit (which has the code)
 * an invalid transition, so the exit code would be lost for good; the
 * agent's report, or the reconciler, moves those. Workloads the host no
 * longer reports stay missing for the reconciler (vanished).
 */
export async function restoreHostWorkloads(
  prisma: PrismaClient,
  store: WorkloadStore,
  hostId: string,
  reported: Array<{ workloadId: string; state: InstanceState }>,
): Promise<string[]> {
  if (reported.length === 0) return [];
  const states = new Map(reported.map((r) => [r.workloadId, r.state]));
  const rows = await prisma.workload.findMany({ where: { hostId, state: 'missing', id: { in: [...states.keys()] } }, select: { id: true } });
  const restored: string[] = [];
  for (const { id } of rows) {
    const to = states.get(id);
    if (!to || !LOSABLE.includes(to) || !canTransition('missing', to)) continue;
    if (await store.transition(id, ['missing'], to, `host is back and reports it ${to}`)) restored.push(id);
  }
  return restored;
}

function reportedStates(workloads: eventsV1.HostStatusChanged['workloads']): Array<{ workloadId: string; state: InstanceState }> {
  const out: Array<{ workloadId: string; state: InstanceState }> = [];
  for (const w of workloads) {
    try {
      out.push({ workloadId: w.workloadId, state: instanceStateFromProto(w.state) });
    } catch {
      // An unspecified or unknown state says nothing; leave that workload missing.
    }
  }
  return out;
}

/**
 * Follows host-registry's host status events. Events may arrive twice, late
 * or out of order, so each is checked against the host's current status
 * before acting: a stale "unreachable" arriving after the host returned
 * changes nothing.
 */
export function watchHostStatus(deps: HostStatusWatcherDeps): EventSubscription {
  const { prisma, store, hosts, logger } = deps;
  const currentStatus = async (hostId: string): Promise<HostStatus | 'deleted'> => {
    try {
      return (await hosts.get(hostId)).status;
    } catch (err) {
      if ((err as { name?: string }).name === 'NotFoundError') return 'deleted';
      throw err;
    }
  };
  return deps.bus.subscribe(
    Topics.hostStatus,
    async (event) => {
      const status = hostStatusFromProto(event.status);
      if (status === 'unreachable' || status === 'down' || event.deleted) {
        const now = await currentStatus(event.hostId);
        if (now !== 'unreachable' && now !== 'down' && now !== 'deleted') return;
        const marked = await markHostWorkloadsMissing(prisma, store, event.hostId, event.deleted ? 'host deleted' : `host ${now}: ${event.reason}`);
        if (marked.length) logger.warn('host lost: its workloads are missing', { hostId: event.hostId, workloadIds: marked });
      } else if (status === 'online' || status === 'draining') {
        const now = await currentStatus(event.hostId);
        if (now !== 'online' && now !== 'draining') return;
        const restored = await restoreHostWorkloads(prisma, store, event.hostId, reportedStates(event.workloads));
        if (restored.length) logger.info('host is back: workloads restored from its report', { hostId: event.hostId, workloadIds: restored });
      }
    },
    { queue: 'scheduler' },
  );
}

/**
 * Drops a deleted host's agent client from this replica's pool. Not in the
 * queue group: every scheduler replica holds its own pool, so every one of
 * them must hear the deletion (the workload changes above happen once).
 */
export function evictDeletedHostClients(deps: Pick<HostStatusWatcherDeps, 'bus' | 'hosts' | 'logger'> & { agents: Pick<AgentPool, 'evict'> }): EventSubscription {
  return deps.bus.subscribe(Topics.hostStatus, async (event) => {
    if (!event.deleted || !event.agentAddress) return;
    try {
      await deps.hosts.get(event.hostId);
      return; // stale: the host exists (a delete event cannot be undone, so this is not that host's)
    } catch (err) {
      if ((err as { name?: string }).name !== 'NotFoundError') throw err;
    }
    deps.agents.evict(event.agentAddress);
    deps.logger.info('deleted host: its agent client was dropped', { hostId: event.hostId });
  });
}
