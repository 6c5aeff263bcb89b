import { openSessionLock, type SessionLock } from '@corral/db';
import type { EventBus, Topic } from '@corral/events';
import { silentLogger } from '@corral/logging';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { insertHosts } from '../__tests__/fleet';
import { ControlPlaneHealth } from './control-plane-health';
import { LivenessMonitor, MONITOR_LOCK_KEY, markUnreachableFenced } from './liveness-monitor';

// The monitor driven one check at a time with a controlled clock, against a
// real Postgres: real advisory locks, real fencing. The clock is compared
// with last_heartbeat_at values the tests write, so no test waits on time.
describeWithDatabase('liveness monitor: election, fencing, brakes', () => {
  const SILENT_MS = 3000;
  let db: TestDatabase;
  let now: number;
  const t0 = new Date('2026-12-03T10:00:00Z').getTime();
  const locks: SessionLock[] = [];
  let published: Array<{ topic: string; key: string; message: Record<string, unknown> }>;

  const bus: Pick<EventBus, 'publish'> = {
    publish<T>(topic: Topic<T>, key: string, message: T) {
      published.push({ topic: topic.name, key, message: message as Record<string, unknown> });
    },
  };

  function monitor(replicaId: string, health = new ControlPlaneHealth(SILENT_MS, 'connected', () => now)) {
    const lock = openSessionLock(db.url, MONITOR_LOCK_KEY, { applicationName: `monitor-${replicaId}-${process.pid}` });
    locks.push(lock);
    const m = new LivenessMonitor({
      prisma: db.prisma,
      lock,
      bus,
      health,
      logger: silentLogger,
      clock: () => now,
      options: { replicaId, silentForMs: SILENT_MS, checkIntervalMs: 250, maxSilentShare: 0.5, minFleetForShareBrake: 4 },
    });
    return { m, lock, health };
  }

  /** Every host of the test heartbeats at the current clock, except `silent`. */
  async function beat(ids: string[], silent: string[] = []) {
    await db.prisma.host.updateMany({ where: { id: { in: ids.filter((id) => !silent.includes(id)) } }, data: { lastHeartbeatAt: new Date(now) } });
  }
  const statusOf = async (id: string) => (await db.prisma.host.findUniqueOrThrow({ where: { id } })).status;

  beforeEach(async () => {
    db = await createTestDatabase();
    now = t0;
    published = [];
  });
  afterEach(async () => {
    await Promise.all(locks.splice(0).map((l) => l.close()));
    await db.drop();
  });

  it('elects one leader, waits one timeout after election, then marks only silent hosts (once, with an event)', async () => {
    const ids = await insertHosts(db.prisma, 10, new Date(now));
    const a = monitor('a');
    const b = monitor('b');
    const first = await a.m.check();
    expect(first).toMatchObject({ role: 'leader', epoch: 1n, grace: true });
    expect(await b.m.check()).toEqual({ role: 'follower' });

    now += 3500;
    await beat(ids, [ids[0]]);
    // Still in the grace after election? No: 3.5 s passed. ids[0] was last seen at t0.
    expect(await a.m.check()).toMatchObject({ role: 'leader', marked: [ids[0]], watched: 10, silent: 1 });
    expect(await statusOf(ids[0])).toBe('unreachable');
    expect(await statusOf(ids[1])).toBe('online');
    expect(published.filter((p) => p.topic === 'hostStatus')).toEqual([
      { topic: 'hostStatus', key: ids[0], message: expect.objectContaining({ status: 'HOST_STATUS_UNREACHABLE', epoch: 1 }) },
    ]);
    now += 250;
    expect(await a.m.check()).toMatchObject({ marked: [] });
    expect(await b.m.check()).toEqual({ role: 'follower' });
  });

  it('fails over when the leader dies, and refuses the deposed leader’s late writes (fencing)', async () => {
    const ids = await insertHosts(db.prisma, 10, new Date(now));
    const a = monitor('a');
    const b = monitor('b');
    expect(await a.m.check()).toMatchObject({ role: 'leader', epoch: 1n });
    // A's session dies (its connection ends, so Postgres frees the lock), but A has not noticed yet.
    await a.lock.close();
    expect(await b.m.check()).toMatchObject({ role: 'leader', epoch: 2n, grace: true });

    now += 3500;
    await beat(ids, [ids[3]]);
    const cutoff = new Date(now - SILENT_MS);
    // A late write from A with the epoch it was elected with changes nothing...
    expect(await markUnreachableFenced(db.prisma, [ids[3]], cutoff, 1n)).toEqual([]);
    expect(await statusOf(ids[3])).toBe('online');
    // ...A steps down at its next check instead of acting...
    expect(await a.m.check()).toEqual({ role: 'follower' });
    // ...and the new leader marks the host exactly once.
    expect(await b.m.check()).toMatchObject({ role: 'leader', epoch: 2n, marked: [ids[3]] });
    expect(await markUnreachableFenced(db.prisma, [ids[3]], cutoff, 2n)).toEqual([]);
    expect(published.filter((p) => p.topic === 'hostStatus').map((p) => p.message['epoch'])).toEqual([2]);
    expect(await db.prisma.fleetMonitor.findUniqueOrThrow({ where: { id: 1 } })).toMatchObject({ epoch: 2n, leader: 'b' });
  });

  it('treats a lost lock connection as losing leadership: retaking the lock is a new election', async () => {
    await insertHosts(db.prisma, 4, new Date(now));
    const a = monitor('relost');
    expect(await a.m.check()).toMatchObject({ role: 'leader', epoch: 1n });
    now += 5000;
    await db.prisma.$queryRawUnsafe('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', `monitor-relost-${process.pid}`);
    // However the loss is noticed (error event or the next check), the next leadership has a new epoch and a fresh grace.
    const next = await a.m.check();
    const again = next.role === 'leader' ? next : await a.m.check();
    expect(again).toMatchObject({ role: 'leader', epoch: 2n, grace: true, marked: [] });
  });

  it('brakes while its own bus is down or recently was, and restarts every deadline from the recovery', async () => {
    const ids = await insertHosts(db.prisma, 10, new Date(now));
    const a = monitor('a');
    await a.m.check();
    now += 1000;
    await beat(ids);

    a.health.busStatus('disconnected');
    now += 5000; // nobody's heartbeats reached us for 5 s
    const braked = await a.m.check();
    expect(braked).toMatchObject({ role: 'leader', braked: ['bus-unhealthy'], marked: [] });
    expect(await db.prisma.host.count({ where: { status: 'online' } })).toBe(10);
    expect(published).toContainEqual(expect.objectContaining({ topic: 'fleetAlarm', key: 'a', message: expect.objectContaining({ active: true, reasons: ['FLEET_ALARM_REASON_BUS_UNHEALTHY'] }) }));
    expect(await db.prisma.fleetMonitor.findUniqueOrThrow({ where: { id: 1 } })).toMatchObject({ brakeActive: true, brakeReasons: ['bus-unhealthy'] });

    a.health.busStatus('connected');
    const recoveredAt = now;
    now += 2000;
    expect(await a.m.check()).toMatchObject({ braked: ['bus-unhealthy'], marked: [] });
    // All but ids[0] heartbeat again after the recovery; one timeout after it, only ids[0] is marked.
    await beat(ids, [ids[0]]);
    now = recoveredAt + SILENT_MS + 100;
    expect(await a.m.check()).toMatchObject({ braked: [], marked: [ids[0]] });
    expect(published).toContainEqual(expect.objectContaining({ topic: 'fleetAlarm', message: expect.objectContaining({ active: false }) }));
    expect(await db.prisma.fleetMonitor.findUniqueOrThrow({ where: { id: 1 } })).toMatchObject({ brakeActive: false });
  });

  it('brakes while its database fails', async () => {
    await insertHosts(db.prisma, 4, new Date(now));
    const a = monitor('a');
    await a.m.check();
    a.health.databaseFailed();
    now += 10_000;
    expect(await a.m.check()).toMatchObject({ braked: ['database-unhealthy'], marked: [] });
    expect(await db.prisma.host.count({ where: { status: 'online' } })).toBe(4);
  });

  it('brakes when more than the configured share goes silent at once, then restarts deadlines when it clears', async () => {
    const ids = await insertHosts(db.prisma, 10, new Date(now));
    const a = monitor('a');
    await a.m.check();
    now += 3500;
    await beat(ids, ids.slice(0, 6));
    expect(await a.m.check()).toMatchObject({ braked: ['mass-silence'], marked: [], watched: 10, silent: 6 });
    expect(await db.prisma.host.count({ where: { status: 'online' } })).toBe(10);
    expect(published).toContainEqual(
      expect.objectContaining({ topic: 'fleetAlarm', message: expect.objectContaining({ active: true, reasons: ['FLEET_ALARM_REASON_MASS_SILENCE'], silentHosts: 6, watchedHosts: 10 }) }),
    );

    // Five come back; one stays silent. The brake releases and that host gets a full timeout from now.
    now += 1000;
    await beat(ids, [ids[0]]);
    expect(await a.m.check()).toMatchObject({ braked: [], marked: [], grace: true });
    now += 2000;
    await beat(ids, [ids[0]]);
    expect(await a.m.check()).toMatchObject({ marked: [] });
    now += 1100;
    await beat(ids, [ids[0]]);
    expect(await a.m.check()).toMatchObject({ marked: [ids[0]] });
  });

  it('does not apply the share rule to a fleet below the minimum', async () => {
    const ids = await insertHosts(db.prisma, 3, new Date(now));
    const a = monitor('a');
    await a.m.check();
    now += 3500;
    await beat(ids, ids.slice(0, 2));
    expect(await a.m.check()).toMatchObject({ braked: [], marked: expect.arrayContaining(ids.slice(0, 2)) });
  });
});
