import type { PrismaClient, SessionLock } from '@corral/db';
import { Topics, type EventBus } from '@corral/events';
import type { Logger } from '@corral/logging';
import { HostStatus, eventsV1 } from '@corral/proto';
import type { BrakeReason, ControlPlaneHealth } from './control-plane-health';

/** Key of the session advisory lock whose holder is the one monitor. */
export const MONITOR_LOCK_KEY = 0x636f7272616c01n; // "corral" + 1

export interface LivenessOptions {
  /** This replica's name in the fleet_monitor row, alarms and logs. */
  replicaId: string;
  /** A host silent this long (missed intervals × interval) is unreachable. */
  silentForMs: number;
  /** How often the monitor checks (and tries to become leader). */
  checkIntervalMs: number;
  /** Share (0–1) of watched hosts that may go silent in one check before the brake engages. */
  maxSilentShare: number;
  /** Below this many watched hosts the share rule does not apply (one of two hosts dying is not a stall). */
  minFleetForShareBrake: number;
}

/** Online hosts, and those of them silent since before `cutoff` (liveness uses our receive time, never the agent's clock). */
export async function findSilentHosts(prisma: PrismaClient, cutoff: Date): Promise<{ watched: number; silent: string[] }> {
  const [watched, silent] = await Promise.all([
    prisma.host.count({ where: { status: 'online', deletedAt: null } }),
    prisma.host.findMany({ where: { status: 'online', deletedAt: null, lastHeartbeatAt: { lt: cutoff } }, select: { id: true } }),
  ]);
  return { watched, silent: silent.map((h) => h.id) };
}

// The fencing check locks the fleet_monitor row FOR SHARE, so a concurrent
// election (which updates that row) either commits first, and this write
// sees the new epoch and changes nothing, or waits until this write is done.
// The cutoff is checked again: a heartbeat may have landed since the read.
const MARK_UNREACHABLE_SQL = `
UPDATE hosts SET status = 'unreachable', updated_at = now() AT TIME ZONE 'UTC'
WHERE id = ANY($1::text[])
  AND status = 'online'
  AND deleted_at IS NULL
  AND last_heartbeat_at < $2::timestamp(3)
  AND EXISTS (SELECT 1 FROM fleet_monitor WHERE id = 1 AND epoch = $3::bigint FOR SHARE)
RETURNING id`;

/**
 * Marks the given hosts unreachable if they are still online and silent,
 * and only while `epoch` is the current monitor epoch (fencing token): a
 * deposed leader's late write changes nothing.
 */
export async function markUnreachableFenced(prisma: PrismaClient, hostIds: string[], cutoff: Date, epoch: bigint): Promise<string[]> {
  if (hostIds.length === 0) return [];
  const rows = await prisma.$queryRawUnsafe<Array<{ id: string }>>(MARK_UNREACHABLE_SQL, hostIds, cutoff.toISOString(), epoch.toString());
  return rows.map((r) => r.id);
}

/** Bumps the fencing epoch for a newly elected leader and returns it. */
export async function claimEpoch(prisma: PrismaClient, replicaId: string): Promise<bigint> {
  const rows = await prisma.$queryRawUnsafe<Array<{ epoch: bigint }>>(
    `INSERT INTO fleet_monitor (id, epoch, leader, updated_at) VALUES (1, 1, $1, now() AT TIME ZONE 'UTC')
     ON CONFLICT (id) DO UPDATE SET epoch = fleet_monitor.epoch + 1, leader = EXCLUDED.leader, updated_at = EXCLUDED.updated_at
     RETURNING epoch`,
    replicaId,
  );
  return BigInt(rows[0].epoch);
}

const REASON_TO_PROTO: Record<BrakeReason, eventsV1.FleetAlarmReason> = {
  'bus-unhealthy': eventsV1.FleetAlarmReason.FLEET_ALARM_REASON_BUS_UNHEALTHY,
  'database-unhealthy': eventsV1.FleetAlarmReason.FLEET_ALARM_REASON_DATABASE_UNHEALTHY,
  'mass-silence': eventsV1.FleetAlarmReason.FLEET_ALARM_REASON_MASS_SILENCE,
};

export const brakeReasonToProto = (r: BrakeReason): eventsV1.FleetAlarmReason => REASON_TO_PROTO[r];

export type CheckOutcome =
  | { role: 'follower' }
  | { role: 'leader'; epoch: bigint; marked: string[]; braked: BrakeReason[]; grace: boolean; watched: number; silent: number };

export interface LivenessDeps {
  prisma: PrismaClient;
  lock: Pick<SessionLock, 'tryAcquire' | 'close'> & Partial<Pick<SessionLock, 'onLost'>>;
  bus: Pick<EventBus, 'publish'>;
  health: ControlPlaneHealth;
  logger: Logger;
  options: LivenessOptions;
  clock?: () => number;
}

/**
 * Failure detection, run by exactly one replica: whoever holds the monitor
 * lock bumps the fencing epoch and from then on checks every
 * `checkIntervalMs`. Brakes: while this replica's own bus or database is
 * (or recently was) unhealthy, or more than `maxSilentShare` of the fleet
 * would go silent in one check, it marks nothing and raises an alarm (error
 * log, FleetAlarm event, GetFleetHealth). Every host's deadline restarts when
 * a replica becomes leader and when a brake releases (as Nomad does after a
 * leader change), so a recovering control plane never mass-evicts.
 */
export class LivenessMonitor {
  private epoch: bigint | undefined;
  private resetAt = 0;
  private brake: { reasons: BrakeReason[]; since: Date; detail: string } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private readonly clock: () => number;

  constructor(private readonly deps: LivenessDeps) {
    this.clock = deps.clock ?? Date.now;
    // Another replica may have led meanwhile: retaking the lock means a new
    // election (new epoch, deadlines restarted), never carrying on.
    deps.lock.onLost?.(() => this.stepDown('monitor lock connection lost'));
  }

  get isLeader(): boolean {
    return this.epoch !== undefined;
  }

  get currentEpoch(): bigint | undefined {
    return this.epoch;
  }

  start(): void {
    const tick = () => {
      if (this.running) return;
      this.running = this.check()
        .catch((err) => this.deps.logger.error('liveness check failed', { err }))
        .finally(() => (this.running = undefined));
    };
    tick();
    this.timer = setInterval(tick, this.deps.options.checkIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
    await this.deps.lock.close();
    this.epoch = undefined;
  }

  private stepDown(why: string): void {
    if (this.epoch === undefined) return;
    this.deps.logger.warn('no longer the liveness monitor', { epoch: this.epoch.toString(), why });
    this.epoch = undefined;
    this.brake = undefined;
  }

  /** One round: election, brakes, marking. Exposed for tests. */
  async check(): Promise<CheckOutcome> {
    const { prisma, health, logger, options } = this.deps;
    if (!(await this.deps.lock.tryAcquire())) {
      this.stepDown('monitor lock not held');
      return { role: 'follower' };
    }
    const now = this.clock();
    if (this.epoch === undefined) {
      try {
        this.epoch = await claimEpoch(prisma, options.replicaId);
      } catch (err) {
        health.databaseFailed();
        logger.error('could not claim the monitor epoch', { err });
        return { role: 'follower' };
      }
      this.resetAt = now;
      logger.info('became the liveness monitor', { epoch: this.epoch.toString(), replicaId: options.replicaId });
    }
    const epoch = this.epoch;
    let reasons = health.reasons();
    let marked: string[] = [];
    let watched = 0;
    let silent = 0;
    let grace = false;
    if (reasons.length === 0) {
      // A health brake holds for a whole timeout after recovery (that is
      // the deadline reset); a mass-silence brake restarts deadlines as it
      // releases, so hosts silent during it get a full timeout from now.
      if (this.brake) {
        const wasMassSilence = this.brake.reasons.includes('mass-silence');
        this.release(now);
        if (wasMassSilence) this.resetAt = now;
      }
      grace = now - this.resetAt < options.silentForMs;
      if (!grace) {
        const cutoff = new Date(now - options.silentForMs);
        try {
          const found = await findSilentHosts(prisma, cutoff);
          watched = found.watched;
          silent = found.silent.length;
          if (watched >= options.minFleetForShareBrake && silent > options.maxSilentShare * watched) {
            reasons = ['mass-silence'];
          } else if (silent > 0) {
            marked = await markUnreachableFenced(prisma, found.silent, cutoff, epoch);
            if (marked.length < silent && (await this.deposed(epoch))) {
              this.stepDown('fencing epoch moved on');
              return { role: 'follower' };
            }
          }
          health.databaseOk();
        } catch (err) {
          health.databaseFailed();
          logger.error('liveness check could not read or write hosts', { err });
          reasons = health.reasons();
        }
      }
    }
    if (reasons.length > 0) this.engage(reasons, watched, silent, now);
    for (const hostId of marked) this.publishUnreachable(hostId, epoch, now);
    if (marked.length > 0) logger.warn('hosts stopped heartbeating: marked unreachable', { hostIds: marked, epoch: epoch.toString() });
    await this.record(epoch, now).catch((err) => {
      health.databaseFailed();
      logger.error('could not record the monitor state', { err });
    });
    return { role: 'leader', epoch, marked, braked: reasons, grace, watched, silent };
  }

  private async deposed(epoch: bigint): Promise<boolean> {
    const row = await this.deps.prisma.fleetMonitor.findUnique({ where: { id: 1 }, select: { epoch: true } });
    return !row || row.epoch !== epoch;
  }

  private engage(reasons: BrakeReason[], watched: number, silent: number, now: number): void {
    const same = this.brake && this.brake.reasons.join() === reasons.join();
    if (same) return;
    const detail = reasons.includes('mass-silence')
      ? `${silent} of ${watched} online hosts went silent at once; not marking them unreachable`
      : `host-registry's own ${reasons.map((r) => (r === 'bus-unhealthy' ? 'NATS' : 'Postgres')).join(' and ')} connection is or was recently unhealthy; not marking hosts unreachable`;
    this.brake = { reasons, since: this.brake?.since ?? new Date(now), detail };
    this.deps.logger.error('fleet alarm: liveness brake engaged', { reasons, detail, watched, silent });
    this.publishAlarm(true, reasons, detail, watched, silent, now);
  }

  private release(now: number): void {
    this.deps.logger.warn('fleet alarm cleared: liveness brake released, every host deadline restarted', { was: this.brake?.reasons });
    this.brake = undefined;
    this.publishAlarm(false, [], 'brake released; host deadlines restarted', 0, 0, now);
  }

  private publishAlarm(active: boolean, reasons: BrakeReason[], detail: string, watched: number, silent: number, now: number): void {
    this.publish(() =>
      this.deps.bus.publish(Topics.fleetAlarm, this.deps.options.replicaId, {
        replicaId: this.deps.options.replicaId,
        active,
        reasons: reasons.map(brakeReasonToProto),
        detail,
        silentHosts: silent,
        watchedHosts: watched,
        at: new Date(now),
      }),
    );
  }

  private publishUnreachable(hostId: string, epoch: bigint, now: number): void {
    this.publish(() =>
      this.deps.bus.publish(Topics.hostStatus, hostId, {
        hostId,
        status: HostStatus.HOST_STATUS_UNREACHABLE,
        previousStatus: HostStatus.HOST_STATUS_ONLINE,
        at: new Date(now),
        reason: `no heartbeat for ${this.deps.options.silentForMs} ms`,
        deleted: false,
        epoch: Number(epoch),
        workloads: [],
        agentAddress: '',
      }),
    );
  }

  private publish(send: () => void): void {
    try {
      send();
    } catch (err) {
      this.deps.logger.warn('could not publish a fleet event', { err });
    }
  }

  private async record(epoch: bigint, now: number): Promise<void> {
    const brake = this.brake;
    const res = await this.deps.prisma.fleetMonitor.updateMany({
      where: { id: 1, epoch },
      data: {
        brakeActive: brake !== undefined,
        brakeReasons: brake?.reasons ?? [],
        brakeDetail: brake?.detail ?? '',
        brakeSince: brake?.since ?? null,
        lastCheckAt: new Date(now),
      },
    });
    if (res.count === 0) this.stepDown('fencing epoch moved on');
  }
}
