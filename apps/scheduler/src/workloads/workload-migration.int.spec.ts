import { NotFoundError } from '@corral/domain';
import { implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1, InstanceState } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { AgentPool } from '../agents/agent-pool';
import type { DirectoryHost, HostDirectory } from '../hosts/host-directory';
import { postgresAllocationLedger } from '../placement/allocation-ledger';
import { PlacementService } from '../placement/placement-service';
import { REPLACED_BY_EVENT, WorkloadMigration } from './workload-migration';
import { WorkloadService } from './workload-service';
import { WorkloadStore } from './workload-store';

// The scheduler's side of drain with migrate against a real database and a
// scripted agent on a real gRPC port (the real agents are in
// apps/e2e/src/drain.e2e.spec.ts): replacement first, same spec and service
// slot, original retired only once it runs, max_parallel, and the link that
// keeps a second run (after a crash) from making a second replacement.
describeWithDatabase('WorkloadMigration', () => {
  let db: TestDatabase;
  let agent: RunningGrpcServer;
  let store: WorkloadStore;
  let workloads: WorkloadService;
  let migration: WorkloadMigration;
  let seq = 0;
  /** What the scripted agent was asked, in order. */
  const calls: { method: string; workloadId: string }[] = [];
  /** Workloads whose start the agent answers with `failed`. */
  const failStart = new Set<string>();
  let inFlightStarts = 0;
  let maxInFlightStarts = 0;

  const hosts: DirectoryHost[] = [];
  const directory: HostDirectory = {
    list: async () => hosts,
    get: async (id) => {
      const host = hosts.find((h) => h.id === id);
      if (!host) throw new NotFoundError(`host ${id} not found`);
      return host;
    },
    close: () => undefined,
  };
  const report = (workloadId: string, state: InstanceState, extra: Partial<agentV1.AgentWorkload> = {}) =>
    agentV1.AgentWorkload.fromPartial({ workloadId, driver: 'process', state, seq: ++seq, ...extra });
  const host = (id: string, status: DirectoryHost['status']): DirectoryHost => ({
    id,
    name: id,
    status,
    teamId: null,
    drivers: [{ name: 'process', healthy: true }],
    capacity: { cpuMillis: 8000, memoryMb: 8192 },
    agentAddress: agent.address,
  });

  /** A running workload on `hostId`, as if created and started there earlier. */
  const runningOn = async (hostId: string, name: string, extra: Record<string, unknown> = {}) => {
    const row = await db.prisma.workload.create({
      data: { name, driver: 'process', command: ['/bin/sleep', '300'], env: { TOKEN: 's3cret' }, resources: { vcpus: 1, memoryMb: 512 }, hostId, state: 'running', stateSeq: BigInt(++seq), ...extra },
    });
    return row;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    agent = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: agentV1.NodeAgentServiceService,
          implementation: implementUnary(
            agentV1.NodeAgentServiceService,
            {
              async startWorkload(req) {
                const id = req.spec?.workloadId ?? '';
                calls.push({ method: 'start', workloadId: id });
                maxInFlightStarts = Math.max(maxInFlightStarts, ++inFlightStarts);
                await new Promise((r) => setTimeout(r, 30));
                inFlightStarts--;
                if (failStart.has(req.spec?.name ?? '')) return { workload: report(id, InstanceState.INSTANCE_STATE_FAILED, { exited: true, exitCode: 1 }) };
                return { workload: report(id, InstanceState.INSTANCE_STATE_RUNNING) };
              },
              async stopWorkload(req) {
                calls.push({ method: 'stop', workloadId: req.workloadId });
                return { workload: report(req.workloadId, InstanceState.INSTANCE_STATE_STOPPED, { exited: true, exitCode: 143 }) };
              },
              async destroyWorkload(req) {
                calls.push({ method: 'destroy', workloadId: req.workloadId });
                return { workload: report(req.workloadId, InstanceState.INSTANCE_STATE_RETIRED, { exited: true, exitCode: 143 }) };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
    hosts.push(host('h-a', 'draining'), host('h-b', 'online'));
    for (const h of hosts) await db.prisma.host.create({ data: { id: h.id, name: h.name, status: h.status, agentAddress: h.agentAddress, capacity: { ...h.capacity }, drivers: h.drivers } });
    store = new WorkloadStore(db.prisma);
    const placement = new PlacementService({ hosts: directory, ledger: postgresAllocationLedger(db.prisma), logger: silentLogger, defaultStrategy: 'bin-pack' });
    workloads = new WorkloadService(store, directory, new AgentPool(5000), silentLogger, 1, placement);
    migration = new WorkloadMigration({ store, workloads, hosts: directory, logger: silentLogger, pollMs: 20, stopTimeoutSeconds: 1 });
  });
  afterAll(async () => {
    await agent?.stop();
    await db?.drop();
  });
  beforeEach(() => {
    calls.length = 0;
    failStart.clear();
  });

  it('starts a replacement with the same spec and service slot on another host, then stops and tears down the original', async () => {
    const original = await runningOn('h-a', 'web', { serviceId: 'svc-1', componentName: 'api', serviceVersion: 3, instanceIndex: 2, restartPolicy: { policy: 'always', maxAttempts: 5, delaySeconds: 1 } });
    const [result] = await migration.migrateHost('h-a', null);
    expect(result).toMatchObject({ workloadId: original.id, name: 'web', outcome: 'moved', toHostId: 'h-b', replacementId: expect.any(String) });
    const replacement = await store.get(result.replacementId!, null);
    expect(replacement).toMatchObject({
      name: 'web',
      hostId: 'h-b',
      state: 'running',
      command: ['/bin/sleep', '300'],
      env: { TOKEN: 's3cret' },
      resources: { vcpus: 1, memoryMb: 512 },
      serviceId: 'svc-1',
      componentName: 'api',
      serviceVersion: 3,
      instanceIndex: 2,
      restartPolicy: { policy: 'always', maxAttempts: 5, delaySeconds: 1 },
    });
    expect((await store.get(original.id, null)).state).toBe('retired');
    // Replacement first; the original only once it ran.
    expect(calls).toEqual([
      { method: 'start', workloadId: replacement.id },
      { method: 'stop', workloadId: original.id },
      { method: 'destroy', workloadId: original.id },
    ]);
    const scheduled = await db.prisma.workloadEvent.findFirstOrThrow({ where: { workloadId: replacement.id, type: 'scheduled' } });
    expect(scheduled.message).toMatch(new RegExp(`^replaces ${original.id} from draining host h-a; bin-pack: h-b`));
  });

  it('after a crash between the replacement and the retirement, a second run keeps the replacement and retires the original', async () => {
    const original = await runningOn('h-a', 'crashy');
    // The first run got as far as the replacement (and its link), then the scheduler died.
    const replacement = await workloads.placeAndStart(
      { name: 'crashy', driver: 'process', command: ['/bin/sleep', '300'], env: {}, routes: [], resources: { vcpus: 1, memoryMb: 512 } },
      null,
      { alsoRecord: (tx, id) => tx.workloadEvent.create({ data: { workloadId: original.id, type: REPLACED_BY_EVENT, message: `replaced by ${id}`, data: { replacementId: id } } }).then(() => undefined) },
    );
    calls.length = 0;
    const before = await db.prisma.workload.count();
    const [result] = await migration.migrateHost('h-a', null);
    expect(result).toMatchObject({ workloadId: original.id, outcome: 'moved', replacementId: replacement.id });
    expect(await db.prisma.workload.count()).toBe(before);
    expect(calls.map((c) => c.method)).toEqual(['stop', 'destroy']);
    // And once more: nothing live is left on the host.
    expect(await migration.migrateHost('h-a', null)).toEqual([]);
  });

  it('leaves the original running when its replacement fails, and reports why', async () => {
    const original = await runningOn('h-a', 'fragile');
    failStart.add('fragile');
    const [result] = await migration.migrateHost('h-a', null);
    expect(result).toMatchObject({ workloadId: original.id, outcome: 'failed', toHostId: 'h-b', reason: 'replacement failed; the original keeps running' });
    expect((await store.get(original.id, null)).state).toBe('running');
    expect(calls.map((c) => c.method)).toEqual(['start']);
    // A later run, with the host able to start it, replaces the failed replacement.
    failStart.clear();
    const [again] = await migration.migrateHost('h-a', null);
    expect(again).toMatchObject({ outcome: 'moved' });
    expect(again.replacementId).not.toBe(result.replacementId);
  });

  it('says so when no other host can take it', async () => {
    const original = await runningOn('h-a', 'huge', { resources: { memoryMb: 100_000 } });
    const [result] = await migration.migrateHost('h-a', null);
    expect(result).toEqual({ workloadId: original.id, name: 'huge', outcome: 'failed', reason: expect.stringMatching(/^no replacement: no host has 100000 MB free; best candidate h-b has \d+$/) });
    expect((await store.get(original.id, null)).state).toBe('running');
    await db.prisma.workload.update({ where: { id: original.id }, data: { state: 'stopped' } });
  });

  it('moves at most max_parallel at a time', async () => {
    for (let i = 0; i < 4; i++) await runningOn('h-a', `batch-${i}`, { resources: {} });
    maxInFlightStarts = 0;
    const results = await migration.migrateHost('h-a', null, { maxParallel: 2 });
    expect(results.map((r) => r.outcome)).toEqual(['moved', 'moved', 'moved', 'moved']);
    expect(maxInFlightStarts).toBe(2);
  });

  it('refuses a host that is not draining', async () => {
    await expect(migration.migrateHost('h-b', null)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: 'host h-b is online: drain it before moving its workloads' });
  });
});
