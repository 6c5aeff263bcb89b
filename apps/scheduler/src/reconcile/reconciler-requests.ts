import { FailedPreconditionError, isCorralError, workloadExtrasToWire } from '@corral/domain';
import type { PrismaClient, Workload as WorkloadRow } from '@corral/db';
import type { Logger } from '@corral/logging';
import type { AgentPool } from '../agents/agent-pool';
import type { HostDirectory } from '../hosts/host-directory';
import { reportFromAgent, workloadLabels, type WorkloadService } from '../workloads/workload-service';
import { membershipOfRow, specOfRow, type WorkloadStore } from '../workloads/workload-store';

// The actions the reconciler asks of the scheduler (which owns workload
// lifecycles): resume a teardown, restart on the same host, replace on
// another. Each carries the reconciler's fencing epoch and is refused unless
// it is still the current one (reconciler_leader.epoch), checked in the same
// statement as the write it guards where there is one, so a deposed
// leader's late call changes nothing.

/** The fence, with the epoch as parameter `$n`. FOR SHARE: an election waits for this write, or this write sees the new epoch. */
const fence = (n: number) => `EXISTS (SELECT 1 FROM reconciler_leader WHERE id = 1 AND epoch = $${n}::bigint FOR SHARE)`;

const NOT_CURRENT = 'not the current reconciler epoch';

// A restart claims its attempt: only from the count before it, so the same
// attempt asked twice (a retry, or two leaders) restarts once.
const CLAIM_RESTART_SQL = `
UPDATE workloads SET restarts = $2, state = 'provisioning', exit_code = NULL, reason = $3, ports = '[]', updated_at = now() AT TIME ZONE 'UTC'
WHERE id = $1 AND restarts = $2 - 1 AND state IN ('failed', 'stopped', 'missing', 'running', 'paused') AND ${fence(4)}`;

// The replaced workload is retired in the transaction that records its
// replacement: either both happen or neither.
const RETIRE_REPLACED_SQL = `
UPDATE workloads SET state = 'retired', reason = $2, ports = '[]', updated_at = now() AT TIME ZONE 'UTC'
WHERE id = $1 AND state IN ('running', 'paused', 'missing', 'stopping') AND ${fence(3)}`;

class AlreadyReplaced extends Error {}

export interface ReconcilerRequestsDeps {
  prisma: PrismaClient;
  store: WorkloadStore;
  workloads: WorkloadService;
  hosts: HostDirectory;
  agents: AgentPool;
  logger: Logger;
}

export class ReconcilerRequests {
  constructor(private readonly deps: ReconcilerRequestsDeps) {}

  /** FailedPrecondition unless `epoch` is the reconciler's current epoch. */
  async assertCurrent(epoch: number | bigint): Promise<void> {
    const rows = await this.deps.prisma.$queryRawUnsafe<unknown[]>(`SELECT 1 FROM reconciler_leader WHERE id = 1 AND epoch = $1::bigint`, BigInt(epoch).toString());
    if (rows.length === 0) throw new FailedPreconditionError(NOT_CURRENT, { field: 'reconcilerEpoch' });
  }

  /**
   * An interrupted teardown, run again with force. The epoch is checked
   * first; a teardown is idempotent and only finishes what a caller had
   * asked for, so one that a deposed leader still gets through does no harm.
   */
  async resumeTeardown(id: string, reason: string, epoch: number): Promise<WorkloadRow> {
    await this.assertCurrent(epoch);
    this.deps.logger.info('resuming an interrupted teardown for the reconciler', { workloadId: id, reason });
    return this.deps.workloads.destroy(id, null, { force: true });
  }

  /**
   * Restart `attempt` of a workload on its own host: the attempt is claimed
   * (restarts = attempt, provisioning) under the fence, then the agent
   * relaunches the ended workload under the same id (its seq continues, so
   * its reports apply over the old run's). An agent that no longer knows the
   * workload starts it afresh from the record; its seq starts over, so the
   * stored one is reset first (no older report of it can come any more).
   */
  async restart(id: string, attempt: number, reason: string, epoch: number): Promise<{ workload: WorkloadRow; restarted: boolean }> {
    const { prisma, store, hosts, agents, logger } = this.deps;
    const row = await store.get(id, null);
    if (!row.hostId) throw new FailedPreconditionError(`workload ${id} has no host to restart on`);
    const why = `restart ${attempt} by the reconciler: ${reason}`;
    const claimed = await prisma.$transaction(async (tx) => {
      const count = await tx.$executeRawUnsafe(CLAIM_RESTART_SQL, id, attempt, why, BigInt(epoch).toString());
      if (count === 1) await tx.workloadEvent.create({ data: { workloadId: id, type: 'transition', state: 'provisioning', message: why, data: { attempt } } });
      return count === 1;
    });
    if (!claimed) {
      await this.assertCurrent(epoch);
      return { workload: await store.get(id, null), restarted: false };
    }
    const host = await hosts.get(row.hostId);
    const agent = agents.get(host);
    try {
      try {
        const res = await agent.restartWorkload({ workloadId: id });
        if (res.workload) await store.applyAgentReport(id, reportFromAgent(res.workload), 'restart-response');
      } catch (err) {
        if (!(isCorralError(err) && err.code === 'NOT_FOUND')) throw err;
        await prisma.workload.updateMany({ where: { id, state: 'provisioning' }, data: { stateSeq: 0n } });
        const spec = specOfRow(row);
        const res = await agent.startWorkload({
          spec: { workloadId: id, name: spec.name, driver: spec.driver, command: spec.command, env: spec.env, labels: workloadLabels(id, row.teamId), ...workloadExtrasToWire(spec) },
        });
        if (res.workload) await store.applyAgentReport(id, reportFromAgent(res.workload), 'start-response');
      }
    } catch (err) {
      logger.warn('restarting a workload failed', { workloadId: id, attempt, err });
      const failure = isCorralError(err) && err.code !== 'INTERNAL' ? `restart failed: ${err.message}` : 'restart failed: agent call failed';
      await store.transition(id, ['provisioning'], 'failed', failure, { reason: failure });
    }
    logger.info('workload restarted for the reconciler', { workloadId: id, attempt, hostId: host.id });
    return { workload: await store.get(id, null), restarted: true };
  }

  /**
   * A new workload with the old one's spec and service slot, placed on
   * another host (the old host is down, so placement never picks it); the
   * old one is retired in the same transaction as the new row, under the
   * fence, so a workload is replaced once whoever asks how often.
   */
  async replace(id: string, reason: string, epoch: number): Promise<{ retired: WorkloadRow; replacement?: WorkloadRow }> {
    const { store, workloads, logger } = this.deps;
    const old = await store.get(id, null);
    if (old.state === 'retired') return { retired: old };
    const retiredReason = `replaced by the reconciler: ${reason}`;
    let replacement: WorkloadRow;
    try {
      replacement = await workloads.placeAndStart(specOfRow(old), old.teamId, {
        membership: membershipOfRow(old),
        why: `replaces ${id} (${reason})`,
        alsoRecord: async (tx, newId) => {
          const count = await tx.$executeRawUnsafe(RETIRE_REPLACED_SQL, id, `${retiredReason}; replacement ${newId}`, BigInt(epoch).toString());
          if (count !== 1) throw new AlreadyReplaced();
          await tx.workloadEvent.create({ data: { workloadId: id, type: 'transition', state: 'retired', message: retiredReason, data: { replacement: newId } } });
        },
      });
    } catch (err) {
      if (!(err instanceof AlreadyReplaced)) throw err;
      await this.assertCurrent(epoch);
      return { retired: await store.get(id, null) };
    }
    logger.info('workload replaced for the reconciler', { workloadId: id, replacement: replacement.id, hostId: replacement.hostId });
    return { retired: await store.get(id, null), replacement };
  }
}

