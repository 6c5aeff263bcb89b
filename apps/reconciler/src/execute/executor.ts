import { isCorralError, type ReconcileAction } from '@corral/domain';
import type { PrismaClient } from '@corral/db';
import type { PromiseClient } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import type { schedulerV1 } from '@corral/proto';
import type { AgentClients } from '../observe/agent-clients';
import type { Observation } from '../observe/observer';

export type Outcome = { outcome: 'succeeded'; detail?: Record<string, unknown> } | { outcome: 'skipped'; why: string } | { outcome: 'failed'; error: string };

/** The fence, with the epoch as parameter `$n` (see libs/db's audit trail and the scheduler's reconciler requests). */
const fence = (n: number) => `EXISTS (SELECT 1 FROM reconciler_leader WHERE id = 1 AND epoch = $${n}::bigint FOR SHARE)`;

// Record fixes the reconciler makes itself: guarded by the state they move
// from (so a report that landed meanwhile wins) and by the fence. state_seq
// is left alone, so any newer agent report still applies over them.
const TRANSITION_SQL = `
UPDATE workloads SET state = $2, reason = COALESCE($4, reason), updated_at = now() AT TIME ZONE 'UTC'
WHERE id = $1 AND state = ANY($3::text[]) AND ${fence(5)}`;

type SchedulerClient = Pick<PromiseClient<schedulerV1.SchedulerServiceClient>, 'resumeTeardown' | 'restartWorkload' | 'replaceWorkload'>;

/**
 * Carries out one decided action. Every action is safe to repeat: record
 * fixes are guarded transitions, reaps and teardowns idempotent, restarts
 * claimed per attempt and replacements once per workload by the scheduler.
 */
export class Executor {
  constructor(
    private readonly deps: { prisma: PrismaClient; scheduler: SchedulerClient; agents: AgentClients; logger: Logger },
  ) {}

  async execute(action: ReconcileAction, epoch: bigint, observation: Observation): Promise<Outcome> {
    try {
      return await this.run(action, epoch, observation);
    } catch (err) {
      this.deps.logger.warn('reconcile action failed', { kind: action.kind, workloadId: action.workloadId, err });
      // Our own typed messages are safe to record; anything else is summarised.
      const error = isCorralError(err) && err.code !== 'INTERNAL' ? `${err.code}: ${err.message}` : 'action failed';
      return { outcome: 'failed', error };
    }
  }

  private async run(action: ReconcileAction, epoch: bigint, observation: Observation): Promise<Outcome> {
    const e = Number(epoch);
    switch (action.kind) {
      case 'reap-orphan': {
        const host = observation.hosts.get(action.hostId);
        if (!host) return { outcome: 'skipped', why: 'host unknown' };
        if (!(await this.stillCurrent(epoch))) return { outcome: 'skipped', why: 'deposed' };
        const agent = this.deps.agents.get(host);
        if (observation.runtimeKinds.get(`${action.hostId}/${action.workloadId}`) === 'unmanaged') {
          const res = await agent.destroyUnmanagedRuntime({ workloadId: action.workloadId });
          return { outcome: 'succeeded', detail: { removed: res.removed, via: 'unmanaged' } };
        }
        await agent.destroyWorkload({ workloadId: action.workloadId, force: true, timeoutSeconds: 0 });
        return { outcome: 'succeeded', detail: { via: 'agent-record' } };
      }
      case 'fail-stuck':
        return this.transition(action.workloadId, ['pending', 'provisioning'], 'failed', `failed by the reconciler: ${action.reason}`, epoch, 'stuck');
      case 'mark-missing':
        return this.transition(action.workloadId, ['running', 'paused'], 'missing', undefined, epoch, action.reason);
      case 'restore':
        return this.transition(action.workloadId, ['missing', 'pending', 'provisioning'], action.state, undefined, epoch, action.reason);
      case 'resume-teardown': {
        const res = await this.deps.scheduler.resumeTeardown({ id: action.workloadId, reason: action.reason, reconcilerEpoch: e });
        return { outcome: 'succeeded', detail: { state: res.workload?.state } };
      }
      case 'restart': {
        const res = await this.deps.scheduler.restartWorkload({ id: action.workloadId, attempt: action.attempt, reason: action.reason, reconcilerEpoch: e });
        return res.restarted ? { outcome: 'succeeded', detail: { attempt: action.attempt } } : { outcome: 'skipped', why: 'attempt already made or the workload moved on' };
      }
      case 'replace': {
        const res = await this.deps.scheduler.replaceWorkload({ id: action.workloadId, reason: action.reason, reconcilerEpoch: e });
        return res.replacement
          ? { outcome: 'succeeded', detail: { replacement: res.replacement.id, hostId: res.replacement.hostId } }
          : { outcome: 'skipped', why: 'already replaced' };
      }
    }
  }

  private async transition(id: string, from: string[], to: string, reason: string | undefined, epoch: bigint, message: string): Promise<Outcome> {
    const moved = await this.deps.prisma.$transaction(async (tx) => {
      const count = await tx.$executeRawUnsafe(TRANSITION_SQL, id, to, from, reason ?? null, epoch.toString());
      if (count === 1) await tx.workloadEvent.create({ data: { workloadId: id, type: 'transition', state: to, message: `reconciler: ${message}` } });
      return count === 1;
    });
    if (moved) return { outcome: 'succeeded', detail: { state: to } };
    return { outcome: 'skipped', why: (await this.stillCurrent(epoch)) ? 'the workload moved on' : 'deposed' };
  }

  private async stillCurrent(epoch: bigint): Promise<boolean> {
    const rows = await this.deps.prisma.$queryRawUnsafe<unknown[]>(`SELECT 1 FROM reconciler_leader WHERE id = 1 AND epoch = $1::bigint`, epoch.toString());
    return rows.length > 0;
  }
}
