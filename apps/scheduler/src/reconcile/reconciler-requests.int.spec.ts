import { NotFoundError } from '@corral/domain';
import { implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1, InstanceState } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { AgentPool } from '../agents/agent-pool';
import type { DirectoryHost, HostDirectory } from '../hosts/host-directory';
import { WorkloadService } from '../workloads/workload-service';
import { WorkloadStore } from '../workloads/workload-store';
import { ReconcilerRequests } from './reconciler-requests';

// The scheduler's side of the reconciler's actions against a real database
// and a scripted agent: each refused without the current reconciler epoch,
// a restart claimed once per attempt, a replacement made once.
describeWithDatabase('ReconcilerRequests', () => {
  let db: TestDatabase;
  let agent: RunningGrpcServer;
  let requests: ReconcilerRequests;
  let store: WorkloadStore;
  let service: WorkloadService;
  let seq = 100;
  const restarted: string[] = [];
  const started: string[] = [];
  /** Workloads the scripted agent knows. */
  const known = new Set<string>();
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
  const running = (workloadId: string) => ({ workload: agentV1.AgentWorkload.fromPartial({ workloadId, driver: 'process', state: InstanceState.INSTANCE_STATE_RUNNING, seq: ++seq }) });

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
                started.push(req.spec!.workloadId);
                known.add(req.spec!.workloadId);
                return running(req.spec!.workloadId);
              },
              async restartWorkload(req) {
                if (!known.has(req.workloadId)) throw new NotFoundError('not on this host');
                restarted.push(req.workloadId);
                return running(req.workloadId);
              },
              async destroyWorkload(req) {
                known.delete(req.workloadId);
                return { workload: agentV1.AgentWorkload.fromPartial({ workloadId: req.workloadId, state: InstanceState.INSTANCE_STATE_RETIRED, seq: ++seq }) };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
    hosts.push(
      { id: 'h-down', name: 'down', status: 'down', teamId: null, drivers: [{ name: 'process', healthy: true }], agentAddress: agent.address },
      { id: 'h-up', name: 'up', status: 'online', teamId: null, drivers: [{ name: 'process', healthy: true }], capacity: { cpuMillis: 64_000, memoryMb: 65_536 }, agentAddress: agent.address },
    );
    for (const h of hosts) await db.prisma.host.create({ data: { id: h.id, name: h.name, status: h.status, agentAddress: h.agentAddress, capacity: {}, drivers: h.drivers } });
    store = new WorkloadStore(db.prisma);
    const agents = new AgentPool(5000);
    service = new WorkloadService(store, directory, agents, silentLogger);
    requests = new ReconcilerRequests({ prisma: db.prisma, store, workloads: service, hosts: directory, agents, logger: silentLogger });
    await db.prisma.reconcilerLeader.update({ where: { id: 1 }, data: { epoch: 7n } });
  });
  afterAll(async () => {
    await agent.stop();
    await db.drop();
  });

  const created = async (name: string) => service.create({ teamId: null, name, driver: 'process', command: ['/bin/sleep', '30'], env: {} });

  it('restarts once per attempt on the same host, and only with the current epoch', async () => {
    const w = await created('crashy');
    await db.prisma.workload.update({ where: { id: w.id }, data: { state: 'failed', exitCode: 137 } });
    await expect(requests.restart(w.id, 1, 'exited with code 137', 6)).rejects.toMatchObject({ name: 'FailedPreconditionError', message: 'not the current reconciler epoch' });
    expect(restarted).toEqual([]);
    const first = await requests.restart(w.id, 1, 'exited with code 137', 7);
    expect(first.restarted).toBe(true);
    expect(first.workload).toMatchObject({ state: 'running', restarts: 1, exitCode: null, hostId: w.hostId });
    expect(restarted).toEqual([w.id]);
    // The same attempt again (a retry, or a second leader): nothing more happens.
    expect((await requests.restart(w.id, 1, 'exited with code 137', 7)).restarted).toBe(false);
    expect(restarted).toEqual([w.id]);
  });

  it('starts afresh (seq reset) when the agent no longer knows the workload', async () => {
    const w = await created('vanished');
    known.delete(w.id);
    await db.prisma.workload.update({ where: { id: w.id }, data: { state: 'missing', stateSeq: 10_000n } });
    const res = await requests.restart(w.id, 1, 'vanished from its host', 7);
    expect(res.restarted).toBe(true);
    expect(res.workload.state).toBe('running');
    expect(started.filter((id) => id === w.id)).toHaveLength(2);
  });

  it('replaces a workload of a down host once: a new row on another host, the old one retired', async () => {
    const w = await created('moving');
    await db.prisma.workload.update({ where: { id: w.id }, data: { hostId: 'h-down', serviceId: null } });
    await expect(requests.replace(w.id, 'host h-down is down', 3)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
    expect((await store.get(w.id, null)).state).toBe('running');
    const res = await requests.replace(w.id, 'host h-down is down', 7);
    expect(res.retired).toMatchObject({ id: w.id, state: 'retired' });
    expect(res.replacement).toMatchObject({ hostId: 'h-up', state: 'running', name: 'moving', command: ['/bin/sleep', '30'] });
    expect((await requests.replace(w.id, 'host h-down is down', 7)).replacement).toBeUndefined();
    expect(await db.prisma.workload.count({ where: { name: 'moving' } })).toBe(2);
  });

  it('resumes a teardown only with the current epoch', async () => {
    const w = await created('leaving');
    await db.prisma.workload.update({ where: { id: w.id }, data: { state: 'tearing_down' } });
    await expect(requests.resumeTeardown(w.id, 'interrupted', 1)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
    expect((await requests.resumeTeardown(w.id, 'interrupted', 7)).state).toBe('retired');
  });
});
