import type { PrismaClient, SessionLock } from '@corral/db';
import type { Logger } from '@corral/logging';

/** Key of the session advisory lock whose holder is the one acting reconciler. */
export const RECONCILER_LOCK_KEY = 0x636f7272616c02n; // "corral" + 2

/** Bumps the fencing epoch for a newly elected leader and returns it. */
export async function claimReconcilerEpoch(prisma: PrismaClient, replicaId: string): Promise<bigint> {
  const rows = await prisma.$queryRawUnsafe<Array<{ epoch: bigint }>>(
    `INSERT INTO reconciler_leader (id, epoch, leader, updated_at) VALUES (1, 1, $1, now() AT TIME ZONE 'UTC')
     ON CONFLICT (id) DO UPDATE SET epoch = reconciler_leader.epoch + 1, leader = EXCLUDED.leader, updated_at = EXCLUDED.updated_at
     RETURNING epoch`,
    replicaId,
  );
  return BigInt(rows[0].epoch);
}

/**
 * One acting reconciler among replicas (the pattern of host-registry's
 * liveness monitor): the holder of a Postgres session advisory lock bumps
 * reconciler_leader.epoch, and every write it makes — its own and those it
 * asks of the scheduler — requires that epoch. When its connection dies
 * Postgres frees the lock, another replica takes it with a new epoch, and
 * whatever the old one still sends is refused.
 */
export class ReconcilerLeadership {
  private epoch: bigint | undefined;

  constructor(
    private readonly deps: { prisma: PrismaClient; lock: Pick<SessionLock, 'tryAcquire' | 'close'> & Partial<Pick<SessionLock, 'onLost'>>; replicaId: string; logger: Logger },
  ) {
    deps.lock.onLost?.(() => this.stepDown('lock connection lost'));
  }

  /** The epoch to fence with while leading, else undefined. */
  get currentEpoch(): bigint | undefined {
    return this.epoch;
  }

  /** Called before each round: leads (with an epoch) or stands by. */
  async check(): Promise<bigint | undefined> {
    if (!(await this.deps.lock.tryAcquire())) {
      this.stepDown('lock not held');
      return undefined;
    }
    if (this.epoch === undefined) {
      try {
        this.epoch = await claimReconcilerEpoch(this.deps.prisma, this.deps.replicaId);
      } catch (err) {
        this.deps.logger.error('could not claim the reconciler epoch', { err });
        return undefined;
      }
      this.deps.logger.info('became the acting reconciler', { epoch: this.epoch.toString(), replicaId: this.deps.replicaId });
    }
    return this.epoch;
  }

  /** True when the stored epoch has moved past ours (we were deposed). */
  async deposed(): Promise<boolean> {
    if (this.epoch === undefined) return true;
    const row = await this.deps.prisma.reconcilerLeader.findUnique({ where: { id: 1 }, select: { epoch: true } });
    if (row && row.epoch === this.epoch) return false;
    this.stepDown('fencing epoch moved on');
    return true;
  }

  stepDown(why: string): void {
    if (this.epoch === undefined) return;
    this.deps.logger.warn('no longer the acting reconciler', { epoch: this.epoch.toString(), why });
    this.epoch = undefined;
  }

  async close(): Promise<void> {
    this.epoch = undefined;
    await this.deps.lock.close();
  }
}
