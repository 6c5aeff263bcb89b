import { randomUUID } from 'node:crypto';
import { appendAuditEvent, openSessionLock, type PrismaClient } from '@corral/db';
import { connectEventBus, Topics, type EventBus } from '@corral/events';
import { createClient, implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1, eventsV1, HostStatus, hostRegistryV1, InstanceState, schedulerV1 } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, eventually, natsUrlOrSkip, type TestDatabase } from '@corral/testing';
import { AuditRecorder } from './audit/audit-recorder';
import { Executor } from './execute/executor';
import { RECONCILER_LOCK_KEY, ReconcilerLeadership } from './leadership/reconciler-leadership';
import { AgentClients } from './observe/agent-clients';
import { Observer } from './observe/observer';
import { ReconcileLoop } from './reconcile-loop';

// The reconciler against real Postgres (rows, fencing, advisory lock) and
// NATS (the audit topic), with a scripted agent, host-registry and
// scheduler on real gRPC ports: what it observes, decides, does and records.
// The real agent and scheduler are exercised end to end in apps/e2e.
const natsUrl = natsUrlOrSkip('reconciler integration tests');
const GRACE_MS = 2_000;

describeWithDatabase('reconciler', () => {
  let db: TestDatabase;
  let bus: EventBus;
  let servers: RunningGrpcServer[] = [];
  const hostId = randomUUID();
  let agentAddress = '';
  /** What the scripted agent has: records and unmanaged runtimes. */
  const agentRecords = new Map<string, agentV1.AgentWorkload>();
  const unmanaged = new Map<string, agentV1.UnmanagedRuntime>();
  const reaped: string[] = [];
  let hostStatus = HostStatus.HOST_STATUS_ONLINE;
  const schedulerCalls: Array<{ rpc: string; id: string; epoch: number; attempt?: number }> = [];
  let currentEpochRows: () => Promise<bigint> = async () => 0n;

  beforeAll(async () => {
    if (!natsUrl) return;
    db = await createTestDatabase();
    bus = await connectEventBus({ url: natsUrl, name: 'reconciler-int', logger: silentLogger });
    const agent = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: agentV1.NodeAgentServiceService,
          implementation: implementUnary(
            agentV1.NodeAgentServiceService,
            {
              async listWorkloads() {
                return { workloads: [...agentRecords.values()] };
              },
              async listUnmanagedRuntimes() {
                return { runtimes: [...unmanaged.values()] };
              },
              async destroyUnmanagedRuntime(req) {
                reaped.push(req.workloadId);
                return { removed: unmanaged.delete(req.workloadId) };
              },
              async destroyWorkload(req) {
                reaped.push(req.workloadId);
                agentRecords.delete(req.workloadId);
                return { workload: undefined };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
    agentAddress = agent.address;
    const registry = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: hostRegistryV1.HostRegistryServiceService,
          implementation: implementUnary(
            hostRegistryV1.HostRegistryServiceService,
            {
              async listHosts() {
                return { hosts: [hostRegistryV1.Host.fromPartial({ id: hostId, name: 'h1', status: hostStatus, agentAddress })] };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
    // The scheduler's side of the fence: refuses a stale epoch like the real one.
    const refuseStale = async (epoch: number) => {
      if (BigInt(epoch) !== (await currentEpochRows())) throw Object.assign(new Error('stale'), { code: 9 });
    };
    const scheduler = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: schedulerV1.SchedulerServiceService,
          implementation: implementUnary(
            schedulerV1.SchedulerServiceService,
            {
              async resumeTeardown(req) {
                await refuseStale(req.reconcilerEpoch);
                schedulerCalls.push({ rpc: 'resumeTeardown', id: req.id, epoch: req.reconcilerEpoch });
                await db.prisma.workload.update({ where: { id: req.id }, data: { state: 'retired' } });
                return { workload: undefined };
              },
              async restartWorkload(req) {
                await refuseStale(req.reconcilerEpoch);
                schedulerCalls.push({ rpc: 'restartWorkload', id: req.id, epoch: req.reconcilerEpoch, attempt: req.attempt });
                const claimed = await db.prisma.workload.updateMany({ where: { id: req.id, restarts: req.attempt - 1 }, data: { restarts: req.attempt, state: 'running', exitCode: null } });
                return { workload: undefined, restarted: claimed.count === 1 };
              },
              async replaceWorkload(req) {
                schedulerCalls.push({ rpc: 'replaceWorkload', id: req.id, epoch: req.reconcilerEpoch });
                return { retired: undefined, replacement: undefined };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
    servers = [agent, registry, scheduler];
    currentEpochRows = async () => (await db.prisma.reconcilerLeader.findUniqueOrThrow({ where: { id: 1 } })).epoch;
  });

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await bus?.close();
    await db?.drop();
  });

  beforeEach(async () => {
    if (!natsUrl) return;
    agentRecords.clear();
    unmanaged.clear();
    reaped.length = 0;
    hostStatus = HostStatus.HOST_STATUS_ONLINE;
    schedulerCalls.length = 0;
    await db.prisma.auditEvent.deleteMany({});
    await db.prisma.workload.deleteMany({});
  });

  /** One reconciler replica over the shared database: its own lock connection and clients. */
  function replica(name: string) {
    const prisma: PrismaClient = db.prisma;
    const agents = new AgentClients({ deadlineMs: 5000 });
    const hostRegistry = createClient(hostRegistryV1.HostRegistryServiceClient, servers[1].address, { deadlineMs: 5000 });
    const scheduler = createClient(schedulerV1.SchedulerServiceClient, servers[2].address, { deadlineMs: 5000 });
    const lock = openSessionLock(db.url, RECONCILER_LOCK_KEY, { applicationName: `reconciler-test-${name}` });
    const leadership = new ReconcilerLeadership({ prisma, lock, replicaId: name, logger: silentLogger });
    const loop = new ReconcileLoop({
      leadership,
      observer: new Observer({ prisma, hostRegistry, agents, logger: silentLogger }),
      executor: new Executor({ prisma, scheduler, agents, logger: silentLogger }),
      audit: new AuditRecorder({ prisma, bus, actor: `reconciler/${name}`, logger: silentLogger }),
      policy: { intentGraceMs: GRACE_MS, provisioningTimeoutMs: GRACE_MS, reportFreshnessMs: 10_000, maxActions: 20 },
      intervalMs: 100,
      logger: silentLogger,
    });
    return {
      loop,
      leadership,
      lock,
      close: async () => {
        await leadership.close();
        agents.closeAll();
        hostRegistry.close();
        scheduler.close();
      },
    };
  }

  const ago = (ms: number) => new Date(Date.now() - ms);
  async function workloadRow(state: string, overrides: Record<string, unknown> = {}) {
    const id = randomUUID();
    await db.prisma.workload.create({ data: { id, name: `w-${id.slice(0, 6)}`, driver: 'process', command: ['sleep', '60'], state, hostId: null, ...overrides } });
    // Rows point at a host the registry lists; the hosts table itself is host-registry's.
    await db.prisma.$executeRawUnsafe(`UPDATE workloads SET host_id = $2, updated_at = $3::timestamp(3) WHERE id = $1`, id, hostId, ((overrides.updatedAt as Date) ?? new Date()).toISOString());
    return id;
  }
  const auditOf = (subjectId: string) => db.prisma.auditEvent.findMany({ where: { subjectId }, orderBy: { id: 'asc' } });

  beforeAll(async () => {
    if (!natsUrl) return;
    // host_id references hosts: one row for the scripted host.
    await db.prisma.host.create({ data: { id: hostId, name: 'h1', agentAddress: '127.0.0.1:1', capacity: {} } });
  });

  it('reaps a labelled runtime no record wants once it is older than the grace window, never inside it', async () => {
    if (!natsUrl) return;
    const r = replica('a');
    try {
      const young = randomUUID();
      const old = randomUUID();
      unmanaged.set(young, agentV1.UnmanagedRuntime.fromPartial({ workloadId: young, driver: 'process', running: true, createdAt: new Date() }));
      unmanaged.set(old, agentV1.UnmanagedRuntime.fromPartial({ workloadId: old, driver: 'process', running: true, createdAt: ago(60_000) }));
      const published: eventsV1.AuditEventRecorded[] = [];
      const sub = bus.subscribe(Topics.audit, (m) => void published.push(m));
      await bus.flush();
      const result = await r.loop.round();
      expect(result.role).toBe('leader');
      expect(reaped).toEqual([old]);
      const trail = await auditOf(old);
      expect(trail.map((e) => [e.kind, e.action, e.outcome])).toEqual([
        ['drift', 'orphan', 'observed'],
        ['action', 'reap-orphan', 'succeeded'],
      ]);
      expect(trail[0].reason).toContain('no record');
      expect(await auditOf(young)).toEqual([]);
      await eventually(() => (published.filter((m) => m.subjectId === old).length >= 2 ? true : undefined), { what: 'published audit events' });
      expect(published.filter((m) => m.subjectId === old).map((m) => m.kind)).toEqual(['drift', 'action']);
      sub.unsubscribe();
    } finally {
      await r.close();
    }
  });

  it('the mid-create race: a pending intent with nothing provisioned is left alone inside the grace window, then failed; nothing is reaped', async () => {
    if (!natsUrl) return;
    const r = replica('a');
    try {
      // The scheduler wrote the intent and died before calling the agent.
      const id = await workloadRow('pending');
      await r.loop.round();
      expect((await db.prisma.workload.findUniqueOrThrow({ where: { id } })).state).toBe('pending');
      expect(await auditOf(id)).toEqual([]);
      // Past the grace window (and provisioning timeout).
      await db.prisma.$executeRawUnsafe(`UPDATE workloads SET updated_at = $2::timestamp(3) WHERE id = $1`, id, ago(GRACE_MS + 1000).toISOString());
      await r.loop.round();
      const row = await db.prisma.workload.findUniqueOrThrow({ where: { id } });
      expect(row.state).toBe('failed');
      expect(row.reason).toContain('failed by the reconciler');
      expect(reaped).toEqual([]);
      expect((await auditOf(id)).map((e) => [e.kind, e.action, e.outcome])).toEqual([
        ['drift', 'stuck', 'observed'],
        ['action', 'fail-stuck', 'succeeded'],
      ]);
    } finally {
      await r.close();
    }
  });

  it('resumes an interrupted teardown through the scheduler with its epoch', async () => {
    if (!natsUrl) return;
    const r = replica('a');
    try {
      const id = await workloadRow('tearing_down', { updatedAt: ago(GRACE_MS + 1000) });
      const result = await r.loop.round();
      expect(result.role === 'leader' && result.outcomes.map((o) => [o.action.kind, o.outcome.outcome])).toEqual([['resume-teardown', 'succeeded']]);
      expect(schedulerCalls).toEqual([{ rpc: 'resumeTeardown', id, epoch: Number(r.leadership.currentEpoch) }]);
    } finally {
      await r.close();
    }
  });

  it('marks a running workload its host no longer has missing, then restarts it per its policy', async () => {
    if (!natsUrl) return;
    const r = replica('a');
    try {
      const id = await workloadRow('running', { updatedAt: ago(GRACE_MS + 1000), restartPolicy: { policy: 'on-failure', maxAttempts: 2, delaySeconds: 0 } });
      await r.loop.round();
      expect((await db.prisma.workload.findUniqueOrThrow({ where: { id } })).state).toBe('missing');
      await r.loop.round();
      expect(schedulerCalls).toEqual([{ rpc: 'restartWorkload', id, epoch: Number(r.leadership.currentEpoch), attempt: 1 }]);
      expect((await auditOf(id)).map((e) => `${e.kind}:${e.action}:${e.outcome}`)).toEqual([
        'drift:vanished:observed',
        'action:mark-missing:succeeded',
        'drift:ended:observed',
        'action:restart:succeeded',
      ]);
    } finally {
      await r.close();
    }
  });

  it('marks the live workloads of an unreachable host missing without restarting them, and restores them when the host reports them alive', async () => {
    if (!natsUrl) return;
    const r = replica('a');
    try {
      // The HostStatusChanged event was lost: only the registry says the host is silent.
      const id = await workloadRow('running', { updatedAt: ago(GRACE_MS + 1000), restartPolicy: { policy: 'always', maxAttempts: 3, delaySeconds: 0 } });
      hostStatus = HostStatus.HOST_STATUS_UNREACHABLE;
      await r.loop.round();
      expect((await db.prisma.workload.findUniqueOrThrow({ where: { id } })).state).toBe('missing');
      await r.loop.round();
      expect(schedulerCalls).toEqual([]);

      hostStatus = HostStatus.HOST_STATUS_ONLINE;
      agentRecords.set(id, agentV1.AgentWorkload.fromPartial({ workloadId: id, driver: 'process', state: InstanceState.INSTANCE_STATE_RUNNING, startedAt: ago(60_000) }));
      await r.loop.round();
      expect((await db.prisma.workload.findUniqueOrThrow({ where: { id } })).state).toBe('running');
      expect(schedulerCalls).toEqual([]);
      expect((await auditOf(id)).map((e) => `${e.kind}:${e.action}:${e.outcome}`)).toEqual([
        'drift:vanished:observed',
        'action:mark-missing:succeeded',
        'drift:back:observed',
        'action:restore:succeeded',
      ]);
    } finally {
      await r.close();
    }
  });

  it('restarts a workload that exited non-zero behind Corral\'s back; a never policy leaves it failed', async () => {
    if (!natsUrl) return;
    const r = replica('a');
    try {
      const crashed = await workloadRow('failed', { exitCode: 137, restartPolicy: { policy: 'on-failure', maxAttempts: 3, delaySeconds: 0 } });
      const standalone = await workloadRow('failed', { exitCode: 137 });
      for (const id of [crashed, standalone]) {
        agentRecords.set(id, agentV1.AgentWorkload.fromPartial({ workloadId: id, driver: 'process', state: InstanceState.INSTANCE_STATE_FAILED, exited: true, exitCode: 137, startedAt: ago(60_000) }));
      }
      await r.loop.round();
      expect(schedulerCalls.map((c) => [c.rpc, c.id, c.attempt])).toEqual([['restartWorkload', crashed, 1]]);
      expect(await auditOf(standalone)).toEqual([]);
    } finally {
      await r.close();
    }
  });

  it('one leader among replicas; when its session dies another takes over with a new epoch, and no action is done twice', async () => {
    if (!natsUrl) return;
    const a = replica('a');
    const b = replica('b');
    try {
      const first = await workloadRow('tearing_down', { updatedAt: ago(GRACE_MS + 1000) });
      const [ra, rb] = await Promise.all([a.loop.round(), b.loop.round()]);
      expect([ra.role, rb.role].sort()).toEqual(['leader', 'standby']);
      const [leader, standby] = ra.role === 'leader' ? [a, b] : [b, a];
      const oldEpoch = leader.leadership.currentEpoch!;
      // Rounds by both again: the standby does nothing, the leader finds nothing left.
      await Promise.all([a.loop.round(), b.loop.round()]);
      expect(schedulerCalls.filter((c) => c.id === first)).toHaveLength(1);

      // The leader's database session dies: Postgres frees the lock.
      await db.prisma.$executeRawUnsafe(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
        `reconciler-test-${leader === a ? 'a' : 'b'}`,
      );
      const second = await workloadRow('tearing_down', { updatedAt: ago(GRACE_MS + 1000) });
      await eventually(async () => ((await standby.loop.round()).role === 'leader' ? true : undefined), { what: 'the standby to take over' });
      const newEpoch = standby.leadership.currentEpoch!;
      expect(newEpoch).toBeGreaterThan(oldEpoch);
      // The deposed leader still believes until it checks; its late round is fenced out.
      await leader.loop.round();
      await standby.loop.round();
      expect(schedulerCalls.filter((c) => c.id === second)).toEqual([{ rpc: 'resumeTeardown', id: second, epoch: Number(newEpoch) }]);
      const actions = await db.prisma.auditEvent.findMany({ where: { kind: 'action' } });
      expect(actions.filter((e) => e.subjectId === first)).toHaveLength(1);
      expect(actions.filter((e) => e.subjectId === second)).toHaveLength(1);
      expect(actions.find((e) => e.subjectId === second)?.epoch).toBe(newEpoch);
      // Whatever the deposed leader still writes is fenced out: no audit row, no record change.
      const late = await appendAuditEvent(db.prisma, { actor: 'reconciler/late', kind: 'drift', action: 'vanished', outcome: 'observed', subjectType: 'workload', subjectId: first, teamId: null, reason: 'late' }, { reconcilerEpoch: oldEpoch });
      expect(late).toBeUndefined();
      const third = await workloadRow('running');
      const lateExecutor = new Executor({ prisma: db.prisma, scheduler: {} as never, agents: new AgentClients({ deadlineMs: 1000 }), logger: silentLogger });
      const observation = { desired: [], observed: [], hosts: new Map(), runtimeKinds: new Map(), teams: new Map() };
      expect(await lateExecutor.execute({ kind: 'mark-missing', workloadId: third, hostId, reason: 'late' }, oldEpoch, observation)).toEqual({ outcome: 'skipped', why: 'deposed' });
      expect((await db.prisma.workload.findUniqueOrThrow({ where: { id: third } })).state).toBe('running');
    } finally {
      await a.close();
      await b.close();
    }
  });
});
