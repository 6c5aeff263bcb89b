import { randomUUID } from 'node:crypto';
import { NotFoundError, type HostStatus } from '@corral/domain';
import { connectEventBus, Topics, type EventBus } from '@corral/events';
import { silentLogger } from '@corral/logging';
import { HostStatus as ProtoHostStatus, InstanceState } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, natsUrlOrSkip, type TestDatabase } from '@corral/testing';
import { WorkloadStore } from '../workloads/workload-store';
import type { DirectoryHost } from './host-directory';
import { evictDeletedHostClients, watchHostStatus } from './host-status-watcher';

async function eventually<T>(probe: () => Promise<T | undefined | false>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// host-registry's HostStatusChanged events over a real NATS server, applied
// to workload rows in a real Postgres: lost host → missing, returned host →
// restored from its report, stale events ignored, seq guards still true.
const natsUrl = natsUrlOrSkip('scheduler host status watcher');
(natsUrl ? describeWithDatabase : describe.skip)('scheduler: host status watcher', () => {
  let db: TestDatabase;
  let bus: EventBus;
  let publisher: EventBus;
  let replicaBus: EventBus;
  const evictedByReplica: string[] = [];
  let store: WorkloadStore;
  const hostId = randomUUID();
  let hostStatus: HostStatus | 'deleted' = 'online';
  const evicted: string[] = [];
  const hosts = {
    async get(id: string): Promise<DirectoryHost> {
      if (hostStatus === 'deleted') throw new NotFoundError(`host ${id} not found`);
      return { id, name: 'h', status: hostStatus, teamId: null, drivers: [], agentAddress: '127.0.0.1:1' };
    },
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    store = new WorkloadStore(db.prisma);
    bus = await connectEventBus({ url: natsUrl!, name: 'watcher-test', logger: silentLogger });
    replicaBus = await connectEventBus({ url: natsUrl!, name: 'watcher-test-replica', logger: silentLogger });
    publisher = await connectEventBus({ url: natsUrl!, name: 'watcher-test-pub', logger: silentLogger });
    // Only this test's host: other runs on the shared server publish for theirs.
    // Two scheduler replicas: one bus connection each, the same queue group.
    for (const replica of [bus, replicaBus]) {
      const scoped = { subscribe: ((t, h, o) => replica.subscribe(t, h, { ...o, key: hostId })) as EventBus['subscribe'] };
      watchHostStatus({ bus: scoped, prisma: db.prisma, store, hosts, logger: silentLogger });
      const pool = replica === bus ? evicted : evictedByReplica;
      evictDeletedHostClients({ bus: scoped, hosts, agents: { evict: (a) => void pool.push(a) }, logger: silentLogger });
    }
    await bus.flush();
    await replicaBus.flush();
    await db.prisma.host.create({ data: { id: hostId, name: 'h', agentAddress: '127.0.0.1:1', capacity: {} } });
  });
  afterAll(async () => {
    await bus?.close();
    await replicaBus?.close();
    await publisher?.close();
    await db?.drop();
  });

  async function workload(state: string, seq = 1): Promise<string> {
    const id = randomUUID();
    await db.prisma.workload.create({ data: { id, name: id.slice(0, 8), driver: 'process', hostId, state, stateSeq: BigInt(seq) } });
    return id;
  }
  const stateOf = async (id: string) => (await db.prisma.workload.findUniqueOrThrow({ where: { id } })).state;
  const publish = (status: ProtoHostStatus, workloads: Array<{ workloadId: string; state: InstanceState }> = [], deleted = false) =>
    publisher.publish(Topics.hostStatus, hostId, {
      hostId,
      status,
      previousStatus: ProtoHostStatus.HOST_STATUS_ONLINE,
      at: new Date(),
      reason: 'test',
      deleted,
      epoch: 1,
      workloads,
      agentAddress: deleted ? '127.0.0.1:1' : '',
    });

  it('marks live workloads missing when the host is lost, and restores them from the returning host’s report', async () => {
    const running = await workload('running');
    const paused = await workload('paused');
    const vanished = await workload('running');
    const stopped = await workload('stopped');
    const pending = await workload('pending');

    hostStatus = 'unreachable';
    publish(ProtoHostStatus.HOST_STATUS_UNREACHABLE);
    await eventually(async () => (await stateOf(vanished)) === 'missing', 'workloads missing');
    expect(await Promise.all([running, paused, stopped, pending].map(stateOf))).toEqual(['missing', 'missing', 'stopped', 'pending']);

    hostStatus = 'online';
    publish(ProtoHostStatus.HOST_STATUS_ONLINE, [
      { workloadId: running, state: InstanceState.INSTANCE_STATE_RUNNING },
      { workloadId: paused, state: InstanceState.INSTANCE_STATE_PAUSED },
    ]);
    // Restored one by one: wait for both.
    await eventually(async () => (await stateOf(running)) === 'running' && (await stateOf(paused)) === 'paused', 'both restored');
    // Not reported any more: stays missing for the reconciler.
    expect(await stateOf(vanished)).toBe('missing');
    const events = await db.prisma.workloadEvent.findMany({ where: { workloadId: running }, orderBy: { createdAt: 'asc' } });
    expect(events.map((e) => e.state)).toEqual(['missing', 'running']);
  });

  it('ignores a stale "unreachable" that arrives after the host came back', async () => {
    const id = await workload('running');
    const marker = await workload('missing');
    hostStatus = 'online';
    publish(ProtoHostStatus.HOST_STATUS_UNREACHABLE);
    // Handled one at a time in order: once the later event is applied, the stale one was handled.
    publish(ProtoHostStatus.HOST_STATUS_ONLINE, [{ workloadId: marker, state: InstanceState.INSTANCE_STATE_RUNNING }]);
    await eventually(async () => (await stateOf(marker)) === 'running', 'marker restored');
    expect(await stateOf(id)).toBe('running');
  });

  it('keeps the seq guard: a newer agent report applies over missing, an older one does not', async () => {
    const id = await workload('running', 5);
    hostStatus = 'unreachable';
    publish(ProtoHostStatus.HOST_STATUS_UNREACHABLE);
    await eventually(async () => (await stateOf(id)) === 'missing', 'missing');
    expect(await store.applyAgentReport(id, { seq: 4, state: 'stopped', exited: true, exitCode: 0, reason: '' }, 'test')).toBe(false);
    expect(await stateOf(id)).toBe('missing');
    expect(await store.applyAgentReport(id, { seq: 6, state: 'stopped', exited: true, exitCode: 0, reason: '' }, 'test')).toBe(true);
    // The host's return then leaves the newer report alone.
    hostStatus = 'online';
    publish(ProtoHostStatus.HOST_STATUS_ONLINE, [{ workloadId: id, state: InstanceState.INSTANCE_STATE_RUNNING }]);
    const other = await workload('missing');
    publish(ProtoHostStatus.HOST_STATUS_ONLINE, [{ workloadId: other, state: InstanceState.INSTANCE_STATE_RUNNING }]);
    await eventually(async () => (await stateOf(other)) === 'running', 'other restored');
    expect(await stateOf(id)).toBe('stopped');
  });

  it('restores only into live states: a reported exit waits for the agent’s own report, which carries the code', async () => {
    const exited = await workload('running', 3);
    const marker = await workload('running', 3);
    hostStatus = 'unreachable';
    publish(ProtoHostStatus.HOST_STATUS_UNREACHABLE);
    await eventually(async () => (await stateOf(exited)) === 'missing' && (await stateOf(marker)) === 'missing', 'missing');
    hostStatus = 'online';
    publish(ProtoHostStatus.HOST_STATUS_ONLINE, [
      { workloadId: exited, state: InstanceState.INSTANCE_STATE_FAILED },
      { workloadId: marker, state: InstanceState.INSTANCE_STATE_RUNNING },
    ]);
    await eventually(async () => (await stateOf(marker)) === 'running', 'marker restored');
    expect(await stateOf(exited)).toBe('missing');
    // The agent's report of the exit still applies, exit code and all.
    expect(await store.applyAgentReport(exited, { seq: 4, state: 'failed', exited: true, exitCode: 7, reason: 'exited' }, 'test')).toBe(true);
    const row = await db.prisma.workload.findUniqueOrThrow({ where: { id: exited } });
    expect([row.state, row.exitCode]).toEqual(['failed', 7]);
  });

  it('marks workloads missing and drops the agent client when the host is deleted', async () => {
    const id = await workload('running');
    hostStatus = 'deleted';
    publish(ProtoHostStatus.HOST_STATUS_DOWN, [], true);
    await eventually(async () => (await stateOf(id)) === 'missing', 'missing after delete');
    // Its agent's client is dropped from the pool of every replica, not just the one that handled the workloads.
    await eventually(async () => evicted.length === 1 && evictedByReplica.length === 1, 'both replicas evicted');
    expect([evicted, evictedByReplica]).toEqual([['127.0.0.1:1'], ['127.0.0.1:1']]);
  });
});
