import { connectEventBus, startEmbeddedBroker, Topics, type EmbeddedBroker, type EventBus } from '@corral/events';
import { createClient, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { HostStatus, InstanceState, eventsV1, hostRegistryV1 } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, freePort, type TestDatabase } from '@corral/testing';
import { eventually, heartbeat } from './__tests__/fleet';
import { loadHostRegistryConfig } from './config';
import { startHostRegistry, type RunningHostRegistry } from './host-registry';

// host-registry as it runs: real Postgres, a real NATS-protocol broker of the
// test's own (the embedded one in libs/events, so no other run's replicas
// share the queue group, and so the test can cut it), simulated agents
// publishing heartbeats. Every assertion polls for an outcome.
const INTERVAL_MS = 250;
const MISSED = 4;

interface Agent {
  hostId: string;
  stop(): void;
  resume(): void;
  workloads: Array<{ workloadId: string; state: InstanceState }>;
}

describeWithDatabase('host-registry fleet membership (service level)', () => {
  let db: TestDatabase;
  let broker: EmbeddedBroker;
  let brokerPort: number;
  let agentsBus: EventBus;
  let watcher: EventBus;
  const registries: RunningHostRegistry[] = [];
  const clients: Array<PromiseClient<hostRegistryV1.HostRegistryServiceClient>> = [];
  const timers: NodeJS.Timeout[] = [];
  const statusEvents: eventsV1.HostStatusChanged[] = [];
  const alarms: eventsV1.FleetAlarm[] = [];

  async function startRegistry(replicaId: string) {
    const port = await freePort();
    const config = loadHostRegistryConfig({
      DATABASE_URL: db.url,
      NATS_URL: broker.url,
      HOST_KEY_ENCRYPTION_KEY: 'k'.repeat(40),
      HOST_REGISTRY_GRPC_PORT: String(port),
      HEARTBEAT_INTERVAL_MS: String(INTERVAL_MS),
      MISSED_HEARTBEATS_BEFORE_UNREACHABLE: String(MISSED),
      HEARTBEAT_FLUSH_INTERVAL_MS: '50',
      LIVENESS_CHECK_INTERVAL_MS: '100',
      LIVENESS_BRAKE_MIN_HOSTS: '4',
      HOST_REGISTRY_REPLICA_ID: replicaId,
    });
    const registry = await startHostRegistry(config, silentLogger);
    registries.push(registry);
    const client = createClient(hostRegistryV1.HostRegistryServiceClient, registry.address);
    clients.push(client);
    return { registry, client };
  }

  async function register(client: PromiseClient<hostRegistryV1.HostRegistryServiceClient>, name: string, teamId = '') {
    const { token } = await client.createRegistrationToken({ ttlSeconds: 600, teamId, description: name, scope: undefined });
    return client.registerHost({ registrationToken: token, name, agentAddress: '127.0.0.1:50060', capacity: { cpuMillis: 1000, memoryMb: 512, diskMb: 1024 }, drivers: [], labels: {} });
  }

  /** Heartbeats like an agent: every INTERVAL_MS, seq + 1, until stopped. */
  function agent({ hostId, hostToken }: { hostId: string; hostToken: string }): Agent {
    let seq = 0;
    let running = true;
    const a: Agent = {
      hostId,
      workloads: [],
      stop: () => (running = false),
      resume: () => (running = true),
    };
    const timer = setInterval(() => {
      if (!running || agentsBus.status !== 'connected') return;
      seq += 1;
      agentsBus.publish(Topics.hostHeartbeat, hostId, { ...heartbeat(hostId, 'boot-1', seq, new Date(), { workloads: a.workloads }), hostToken });
    }, INTERVAL_MS);
    timers.push(timer);
    return a;
  }

  const status = async (client: PromiseClient<hostRegistryV1.HostRegistryServiceClient>, id: string) => (await client.getHost({ id })).host?.status;

  beforeAll(async () => {
    brokerPort = await freePort();
    broker = await startEmbeddedBroker({ port: brokerPort });
    agentsBus = await connectEventBus({ url: broker.url, name: 'agents', logger: silentLogger, reconnect: { minDelayMs: 50, maxDelayMs: 200 } });
    watcher = await connectEventBus({ url: broker.url, name: 'watcher', logger: silentLogger });
    watcher.subscribe(Topics.hostStatus, (e) => void statusEvents.push(e));
    watcher.subscribe(Topics.fleetAlarm, (e) => void alarms.push(e));
    await watcher.flush();
  });
  afterAll(async () => {
    await agentsBus?.close();
    await watcher?.close();
    await broker?.stop();
  });
  // Each test gets its own fleet: a database and registries of its own.
  beforeEach(async () => {
    db = await createTestDatabase();
  });
  afterEach(async () => {
    for (const t of timers.splice(0)) clearInterval(t);
    for (const c of clients.splice(0)) c.close();
    await Promise.all(registries.splice(0).map((r) => r.stop()));
    await db?.drop();
  });

  it('detects a host whose agent stops (event), and brings it back with its workloads reported when it returns', async () => {
    const { client } = await startRegistry('r1');
    const [a, b] = await Promise.all([register(client, 'stop-a'), register(client, 'stop-b')]);
    const agentA = agent(a);
    agent(b);
    agentA.workloads = [{ workloadId: 'w-a', state: InstanceState.INSTANCE_STATE_RUNNING }];
    await eventually(async () => (await client.getFleetHealth({})).leader, 'r1 leads');

    agentA.stop();
    await eventually(async () => (await status(client, a.hostId)) === HostStatus.HOST_STATUS_UNREACHABLE, 'a unreachable');
    expect(await status(client, b.hostId)).toBe(HostStatus.HOST_STATUS_ONLINE);
    await eventually(() => statusEvents.find((e) => e.hostId === a.hostId && e.status === HostStatus.HOST_STATUS_UNREACHABLE), 'unreachable event');

    agentA.resume();
    await eventually(async () => (await status(client, a.hostId)) === HostStatus.HOST_STATUS_ONLINE, 'a online again');
    const back = await eventually(() => statusEvents.find((e) => e.hostId === a.hostId && e.status === HostStatus.HOST_STATUS_ONLINE), 'online event');
    expect(back).toMatchObject({ previousStatus: HostStatus.HOST_STATUS_UNREACHABLE, workloads: [{ workloadId: 'w-a', state: InstanceState.INSTANCE_STATE_RUNNING }] });
    const health = await client.getFleetHealth({});
    expect(health).toMatchObject({ leader: true, brakeActive: false, busConnected: true, databaseHealthy: true });
    expect(health.heartbeatsApplied).toBeGreaterThan(0);
    expect(health.heartbeatLatencyP99Ms).toBeGreaterThan(0);
  });

  it('drains (heartbeats keep it draining) and undrains; a team cannot drain a platform host', async () => {
    const { client } = await startRegistry('r2');
    const h = await register(client, 'drain-1');
    agent(h);
    const drained = await client.drainHost({ id: h.hostId, teamId: '' });
    expect(drained.host?.status).toBe(HostStatus.HOST_STATUS_DRAINING);
    expect((await client.drainHost({ id: h.hostId, teamId: '' })).host?.status).toBe(HostStatus.HOST_STATUS_DRAINING);
    const before = (await client.getHost({ id: h.hostId })).host!.lastHeartbeatAt!;
    await eventually(async () => (await client.getHost({ id: h.hostId })).host!.lastHeartbeatAt! > before, 'heartbeats still applied');
    expect(await status(client, h.hostId)).toBe(HostStatus.HOST_STATUS_DRAINING);
    expect(statusEvents).toContainEqual(expect.objectContaining({ hostId: h.hostId, status: HostStatus.HOST_STATUS_DRAINING }));

    await expect(client.drainHost({ id: h.hostId, teamId: '00000000-0000-0000-0000-000000000001' })).rejects.toMatchObject({ name: 'PermissionDeniedError' });
    await expect(client.drainHost({ id: '', teamId: '' })).rejects.toMatchObject({ name: 'InvalidArgumentError' });
    expect((await client.undrainHost({ id: h.hostId, teamId: '' })).host?.status).toBe(HostStatus.HOST_STATUS_ONLINE);
    expect((await client.undrainHost({ id: h.hostId, teamId: '' })).host?.status).toBe(HostStatus.HOST_STATUS_ONLINE);
  });

  it('refuses to delete a host with workloads unless forced; a deleted host cannot heartbeat back or refresh', async () => {
    const { client } = await startRegistry('r3');
    const h = await register(client, 'delete-1');
    const ag = agent(h);
    ag.workloads = [
      { workloadId: 'w-live', state: InstanceState.INSTANCE_STATE_RUNNING },
      { workloadId: 'w-done', state: InstanceState.INSTANCE_STATE_STOPPED },
    ];
    const reported = async () => (await db.prisma.host.findUniqueOrThrow({ where: { id: h.hostId } })).reportedWorkloads as unknown[];
    await eventually(async () => (await reported()).length === 2, 'workloads reported');

    await expect(client.deleteHost({ id: h.hostId, teamId: '', force: false })).rejects.toMatchObject({ name: 'FailedPreconditionError', message: expect.stringContaining('w-live') });
    await expect(client.deleteHost({ id: h.hostId, teamId: '', force: false })).rejects.toMatchObject({ message: expect.not.stringContaining('w-done') });
    expect(await client.deleteHost({ id: h.hostId, teamId: '', force: true })).toEqual({ id: h.hostId, affectedWorkloadIds: ['w-live'], deletedNow: true });
    expect(await client.deleteHost({ id: h.hostId, teamId: '', force: true })).toMatchObject({ deletedNow: false });
    const gone = await eventually(() => statusEvents.find((e) => e.hostId === h.hostId && e.deleted), 'deleted event');
    // The address its heartbeats last reported, so the scheduler can drop its client.
    expect(gone).toMatchObject({ status: HostStatus.HOST_STATUS_DOWN, agentAddress: '127.0.0.1:50061' });

    await expect(client.getHost({ id: h.hostId })).rejects.toMatchObject({ name: 'NotFoundError' });
    const row = await db.prisma.host.findUniqueOrThrow({ where: { id: h.hostId } });
    // Its heartbeats keep arriving (the agent does not know) and change nothing.
    const applied = (await client.getFleetHealth({})).heartbeatsReceived;
    await eventually(async () => (await client.getFleetHealth({})).heartbeatsReceived > applied + 2, 'more heartbeats received');
    expect(await db.prisma.host.findUniqueOrThrow({ where: { id: h.hostId } })).toMatchObject({ lastSeq: row.lastSeq, status: 'down' });
    await expect(client.refreshHostCredentials({ refreshToken: h.refreshToken })).rejects.toMatchObject({ name: 'UnauthenticatedError' });
  });

  it('fails over to another replica when the monitoring one stops, and the new leader detects a stopped agent once', async () => {
    const first = await startRegistry('fo-1');
    const second = await startRegistry('fo-2');
    const hosts = await Promise.all([1, 2, 3, 4, 5].map((i) => register(first.client, `fo-${i}`)));
    const agents = hosts.map((h) => agent(h));
    const leaders = async () => Promise.all([first.client, second.client].map(async (c) => (await c.getFleetHealth({})).leader));
    const who = await eventually(async () => {
      const l = await leaders();
      return l.filter(Boolean).length === 1 ? l : undefined;
    }, 'exactly one leader');
    const [leader, follower] = who[0] ? [first, second] : [second, first];
    const epochBefore = (await follower.client.getFleetHealth({})).epoch;

    await leader.registry.stop();
    await eventually(async () => (await follower.client.getFleetHealth({})).leader, 'follower takes over');
    expect((await follower.client.getFleetHealth({})).epoch).toBeGreaterThan(epochBefore);

    agents[0].stop();
    await eventually(async () => (await status(follower.client, hosts[0].hostId)) === HostStatus.HOST_STATUS_UNREACHABLE, 'detected by the new leader');
    const health = await follower.client.getFleetHealth({});
    expect(statusEvents.filter((e) => e.hostId === hosts[0].hostId && e.status === HostStatus.HOST_STATUS_UNREACHABLE)).toEqual([expect.objectContaining({ epoch: health.epoch })]);
    for (const h of hosts.slice(1)) expect(await status(follower.client, h.hostId)).toBe(HostStatus.HOST_STATUS_ONLINE);
  });

  it('brakes when more than half of the fleet goes silent at once: alarm, nobody marked', async () => {
    const { client } = await startRegistry('ms');
    const hosts = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => register(client, `ms-${i}`)));
    const agents = hosts.map((h) => agent(h));
    await eventually(async () => (await client.getFleetHealth({})).leader, 'leader');
    for (const a of agents.slice(0, 4)) a.stop();
    const health = await eventually(async () => {
      const h = await client.getFleetHealth({});
      return h.brakeActive ? h : undefined;
    }, 'brake engaged');
    expect(health.brakeReasons).toEqual([eventsV1.FleetAlarmReason.FLEET_ALARM_REASON_MASS_SILENCE]);
    await eventually(() => alarms.find((a) => a.replicaId === 'ms' && a.active), 'alarm event');
    for (const h of hosts) expect(await status(client, h.hostId)).toBe(HostStatus.HOST_STATUS_ONLINE);
    for (const a of agents.slice(0, 4)) a.resume();
    await eventually(async () => !(await client.getFleetHealth({})).brakeActive, 'brake released');
    await eventually(() => alarms.find((a) => a.replicaId === 'ms' && !a.active), 'alarm cleared');
  });

  it('drops heartbeats without a valid host token for the host they speak for', async () => {
    const { client } = await startRegistry('auth');
    const [victim, other] = await Promise.all([register(client, 'auth-victim'), register(client, 'auth-other')]);
    const honest = agent(victim);
    await eventually(async () => (await status(client, victim.hostId)) === HostStatus.HOST_STATUS_ONLINE, 'victim online');
    honest.stop();
    // Forgeries alone: no token, garbage, another host's valid token. None keeps it alive.
    let seq = 1_000;
    const forge = setInterval(() => {
      for (const hostToken of ['', 'not-a-jwt', other.hostToken]) {
        seq += 1;
        agentsBus.publish(Topics.hostHeartbeat, victim.hostId, { ...heartbeat(victim.hostId, 'boot-1', seq, new Date(), { workloads: [{ workloadId: 'forged', state: InstanceState.INSTANCE_STATE_RUNNING }] }), hostToken });
      }
    }, INTERVAL_MS);
    timers.push(forge);
    await eventually(async () => (await status(client, victim.hostId)) === HostStatus.HOST_STATUS_UNREACHABLE, 'victim unreachable despite forged heartbeats');
    clearInterval(forge);
    // The forged workload report never landed: deleting needs no force.
    await expect(client.deleteHost({ id: victim.hostId, teamId: '', force: false })).resolves.toMatchObject({ affectedWorkloadIds: [] });
  });

  // Last: it stops the shared broker.
  it('brakes when its own NATS connection is cut, marks nobody, and resets deadlines after reconnecting', async () => {
    const { client } = await startRegistry('cut');
    const hosts = await Promise.all([1, 2, 3].map((i) => register(client, `cut-${i}`)));
    const agents = hosts.map((h) => agent(h));
    await eventually(async () => (await client.getFleetHealth({})).leader, 'leader');
    // Let every host heartbeat once through this registry.
    await eventually(async () => (await db.prisma.host.count({ where: { id: { in: hosts.map((h) => h.hostId) }, lastSeq: { gt: 0 } } })) === 3, 'all heartbeating');

    await broker.stop();
    const health = await eventually(async () => {
      const h = await client.getFleetHealth({});
      return h.brakeActive && !h.busConnected ? h : undefined;
    }, 'brake on a cut bus');
    expect(health.brakeReasons).toEqual([eventsV1.FleetAlarmReason.FLEET_ALARM_REASON_BUS_UNHEALTHY]);
    // Wait until the monitor has checked well past the timeout of every host.
    const cutCheck = health.lastCheckAt!.getTime();
    await eventually(async () => (await client.getFleetHealth({})).lastCheckAt!.getTime() > cutCheck + 3 * INTERVAL_MS * MISSED, 'checks past the timeout');
    for (const h of hosts) expect(await status(client, h.hostId)).toBe(HostStatus.HOST_STATUS_ONLINE);

    broker = await startEmbeddedBroker({ port: brokerPort });
    await eventually(async () => {
      const h = await client.getFleetHealth({});
      return h.busConnected && !h.brakeActive;
    }, 'reconnected and released', 60_000);
    for (const h of hosts) expect(await status(client, h.hostId)).toBe(HostStatus.HOST_STATUS_ONLINE);
    // Detection works again afterwards.
    agents[0].stop();
    await eventually(async () => (await status(client, hosts[0].hostId)) === HostStatus.HOST_STATUS_UNREACHABLE, 'detected after recovery', 60_000);
    expect(await status(client, hosts[1].hostId)).toBe(HostStatus.HOST_STATUS_ONLINE);
  });
});
