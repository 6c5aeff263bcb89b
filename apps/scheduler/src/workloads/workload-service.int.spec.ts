import { FailedPreconditionError, NotFoundError } from '@corral/domain';
import { implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1, InstanceState } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, freePort, type TestDatabase } from '@corral/testing';
import { AgentPool } from '../agents/agent-pool';
import type { DirectoryHost, HostDirectory } from '../hosts/host-directory';
import { WorkloadService } from './workload-service';
import { WorkloadStore, workloadToProto } from './workload-store';

// A scripted agent on a real gRPC port: the scheduler's side of the contract
// (placement, intent record, seq-gated state, idempotent stop) against a real
// database. The real agent is exercised end to end in apps/e2e.
describeWithDatabase('WorkloadService', () => {
  let db: TestDatabase;
  let agent: RunningGrpcServer;
  let service: WorkloadService;
  let store: WorkloadStore;
  const started: agentV1.WorkloadSpec[] = [];
  let seq = 0;
  let stopAnswer: 'ok' | 'not-found' = 'ok';
  let destroyAnswer: 'ok' | 'unknown' | 'refuse' = 'ok';
  const destroyed: agentV1.DestroyWorkloadRequest[] = [];
  /** What the scripted agent knows: state and ports per workload. */
  const onAgent = new Map<string, { state: InstanceState; ports: agentV1.PortMapping[] }>();
  let pauseAnswer: 'ok' | 'cannot-pause' | 'not-found' = 'ok';
  const inspected: string[] = [];
  const restored: agentV1.RestoreWorkloadRequest[] = [];
  const record = (spec: { workloadId: string; driver: string }, state: InstanceState, extra: Partial<agentV1.AgentWorkload> = {}) =>
    agentV1.AgentWorkload.fromPartial({ workloadId: spec.workloadId, driver: spec.driver, state, seq: ++seq, ...extra });

  const hosts: DirectoryHost[] = [];
  const directory: HostDirectory = {
    list: async (teamId) => hosts.filter((h) => h.teamId === null || h.teamId === teamId),
    get: async (id) => {
      const host = hosts.find((h) => h.id === id);
      // As host-registry answers for a deleted host.
      if (!host) throw new NotFoundError(`host ${id} not found`);
      return host;
    },
    close: () => undefined,
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
                const spec = agentV1.WorkloadSpec.fromPartial(req.spec ?? {});
                started.push(spec);
                const ports = spec.routes.map((r, i) => ({ name: r.name, guestPort: r.port, hostPort: 20000 + i, protocol: r.protocol }));
                onAgent.set(spec.workloadId, { state: InstanceState.INSTANCE_STATE_RUNNING, ports });
                return { workload: record(spec, InstanceState.INSTANCE_STATE_RUNNING, { ports }) };
              },
              async inspectWorkload(req) {
                inspected.push(req.workloadId);
                const known = onAgent.get(req.workloadId);
                if (!known) throw new NotFoundError('no such workload');
                return { workload: record({ workloadId: req.workloadId, driver: 'process' }, known.state, { ports: known.ports }) };
              },
              async pauseWorkload(req) {
                if (pauseAnswer === 'cannot-pause') throw new FailedPreconditionError('driver podman cannot pause');
                const known = onAgent.get(req.workloadId);
                if (!known || pauseAnswer === 'not-found') throw new NotFoundError('no such workload');
                known.state = InstanceState.INSTANCE_STATE_PAUSED;
                return { workload: record({ workloadId: req.workloadId, driver: 'process' }, known.state, { ports: known.ports }) };
              },
              async resumeWorkload(req) {
                const known = onAgent.get(req.workloadId);
                if (!known) throw new NotFoundError('no such workload');
                known.state = InstanceState.INSTANCE_STATE_RUNNING;
                return { workload: record({ workloadId: req.workloadId, driver: 'process' }, known.state, { ports: known.ports }) };
              },
              async destroyWorkload(req) {
                destroyed.push(req);
                if (destroyAnswer === 'refuse') throw new FailedPreconditionError('workload is still running');
                if (destroyAnswer === 'unknown') return { workload: undefined };
                return { workload: record({ workloadId: req.workloadId, driver: 'process' }, InstanceState.INSTANCE_STATE_RETIRED, { exited: true, exitCode: 143 }) };
              },
              async stopWorkload(req) {
                if (stopAnswer === 'not-found') throw new NotFoundError('no such workload');
                return { workload: record({ workloadId: req.workloadId, driver: 'process' }, InstanceState.INSTANCE_STATE_STOPPED, { exited: true, exitCode: 143 }) };
              },
              async restoreWorkload(req) {
                const spec = agentV1.WorkloadSpec.fromPartial(req.spec ?? {});
                restored.push(req);
                onAgent.set(spec.workloadId, { state: InstanceState.INSTANCE_STATE_RUNNING, ports: [] });
                return { workload: record(spec, InstanceState.INSTANCE_STATE_RUNNING) };
              },
              async readLogs() {
                return { data: Buffer.from('hello\n'), truncated: false };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
    hosts.push(
      { id: 'h-offline', name: 'offline', status: 'unreachable', teamId: null, drivers: [{ name: 'process', healthy: true }], agentAddress: agent.address },
      // Capacity: workloads that ask for resources are placed only where they fit.
      { id: 'h-1', name: 'one', status: 'online', teamId: null, drivers: [{ name: 'process', healthy: true }], capacity: { cpuMillis: 64_000, memoryMb: 65_536 }, agentAddress: agent.address },
    );
    for (const h of hosts) {
      await db.prisma.host.create({ data: { id: h.id, name: h.name, status: h.status, agentAddress: h.agentAddress, capacity: {}, drivers: h.drivers } });
    }
    store = new WorkloadStore(db.prisma);
    service = new WorkloadService(store, directory, new AgentPool(5000), silentLogger);
  });
  afterAll(async () => {
    await agent.stop();
    await db.drop();
  });

  it('places on an online host, records the intent, starts it and stores the agent state', async () => {
    const w = await service.create({ teamId: null, name: 'web', driver: 'process', command: ['/bin/sleep', '30'], env: { TOKEN: 's3cret' } });
    expect(w).toMatchObject({ state: 'running', hostId: 'h-1', stateSeq: BigInt(seq) });
    expect(started.at(-1)).toMatchObject({ workloadId: w.id, command: ['/bin/sleep', '30'], env: { TOKEN: 's3cret' }, labels: { 'corral.workload-id': w.id } });
    const events = await db.prisma.workloadEvent.findMany({ where: { workloadId: w.id }, orderBy: { createdAt: 'asc' } });
    expect(events.map((e) => e.state)).toEqual(['pending', 'provisioning', 'running']);
  });

  it('ignores a state report older than the stored one (reordered delivery)', async () => {
    const w = await service.create({ teamId: null, name: 'reorder', driver: 'process', command: ['/bin/true'], env: {} });
    const current = Number(w.stateSeq);
    expect(await store.applyAgentReport(w.id, { seq: current + 2, state: 'stopped', exited: true, exitCode: 0, reason: '' }, 'event')).toBe(true);
    expect(await store.applyAgentReport(w.id, { seq: current + 1, state: 'running', exited: false, exitCode: 0, reason: '' }, 'event')).toBe(false);
    expect(await store.applyAgentReport(w.id, { seq: current + 2, state: 'stopped', exited: true, exitCode: 0, reason: '' }, 'event')).toBe(false);
    expect(await store.get(w.id, null)).toMatchObject({ state: 'stopped', exitCode: 0 });
  });

  it('refuses with the reason when no host can run the driver, and writes nothing', async () => {
    const before = await db.prisma.workload.count();
    await expect(service.create({ teamId: null, name: 'vm', driver: 'qemu', vm: { mode: 'microvm', kernel: '/boot/vmlinuz' } })).rejects.toMatchObject({
      name: 'FailedPreconditionError',
      message: expect.stringContaining('no online host can run driver "qemu"'),
    });
    expect(await db.prisma.workload.count()).toBe(before);
  });

  describe('restore', () => {
    beforeEach(() => {
      const h1 = hosts.find((h) => h.id === 'h-1');
      if (h1) h1.agentAddress = agent.address;
    });
    it("places the restored workload on the snapshot's host through placement, then asks that host's agent", async () => {
      const source = await service.create({ teamId: null, name: 'snap-src', driver: 'process', command: ['/bin/server'], resources: { vcpus: 1, memoryMb: 128 } });
      const copy = await service.restore(source.id, null, 'snap-1');
      expect(copy).toMatchObject({ hostId: source.hostId, state: 'running', name: 'snap-src-restored' });
      const scheduled = await db.prisma.workloadEvent.findMany({ where: { workloadId: copy.id, type: 'scheduled' } });
      expect(scheduled.map((e) => e.message)).toEqual([expect.stringContaining(`restored from snapshot snap-1 of ${source.id}`)]);
      expect(restored.at(-1)).toMatchObject({ sourceWorkloadId: source.id, snapshotId: 'snap-1', spec: { workloadId: copy.id } });
    });

    it("refuses a restore the snapshot's host has no room for, naming the host, writing nothing and asking no agent", async () => {
      // Over half the host's memory: the source fits, a copy beside it does not.
      const source = await service.create({ teamId: null, name: 'snap-big', driver: 'process', command: ['/bin/server'], resources: { vcpus: 1, memoryMb: 40_000 } });
      const before = await db.prisma.workload.count();
      const asked = restored.length;
      await expect(service.restore(source.id, null, 'snap-2')).rejects.toMatchObject({ name: 'FailedPreconditionError', field: 'placement', message: expect.stringContaining('the snapshot lives on one') });
      expect(await db.prisma.workload.count()).toBe(before);
      expect(restored).toHaveLength(asked);
      await service.destroy(source.id, null, { force: true });
    });
  });

  it('refuses invalid specs naming the field', async () => {
    await expect(service.create({ teamId: null, name: 'ok', driver: 'process', command: [], env: {} })).rejects.toMatchObject({ field: 'command' });
  });

  it('stops idempotently', async () => {
    const w = await service.create({ teamId: null, name: 'stopme', driver: 'process', command: ['/bin/sleep', '30'], env: {} });
    const first = await service.stop(w.id, null);
    expect(first).toMatchObject({ state: 'stopped', exitCode: 143 });
    const seqAfter = seq;
    const second = await service.stop(w.id, null);
    expect(second).toMatchObject({ state: 'stopped' });
    expect(seq).toBe(seqAfter); // the agent was not called again
  });

  it('marks a workload its agent no longer knows as stopped', async () => {
    const w = await service.create({ teamId: null, name: 'forgotten', driver: 'process', command: ['/bin/sleep', '30'], env: {} });
    stopAnswer = 'not-found';
    try {
      expect(await service.stop(w.id, null)).toMatchObject({ state: 'stopped', reason: 'unknown to its host' });
    } finally {
      stopAnswer = 'ok';
    }
  });

  it('records a failed start when the agent cannot be reached, without leaking its error', async () => {
    const deadPort = await freePort();
    hosts.splice(0, hosts.length, {
      id: 'h-1',
      name: 'one',
      status: 'online',
      teamId: null,
      drivers: [{ name: 'process', healthy: true }],
      capacity: { cpuMillis: 64_000, memoryMb: 65_536 },
      agentAddress: `127.0.0.1:${deadPort}`,
    });
    const w = await service.create({ teamId: null, name: 'unreachable', driver: 'process', command: ['/bin/true'], env: {} });
    expect(w).toMatchObject({ state: 'failed', reason: 'host agent unreachable' });
  });

  it("hides another team's workload as not found", async () => {
    const team = await db.prisma.team.create({ data: { name: 'other' } });
    const w = await db.prisma.workload.create({ data: { name: 'theirs', teamId: team.id, driver: 'process', command: ['x'], env: {} } });
    await expect(service.get(w.id, 'some-other-team')).rejects.toMatchObject({ name: 'NotFoundError' });
    await expect(service.get(w.id, team.id)).resolves.toMatchObject({ id: w.id });
  });

  it("lists one host's workloads, optionally only those not at rest, within the team", async () => {
    const [mine, other] = await Promise.all(['hostlist-mine', 'hostlist-other'].map((name) => db.prisma.team.create({ data: { name } })));
    const row = (name: string, teamId: string, hostId: string, state: string) =>
      db.prisma.workload.create({ data: { name, teamId, hostId, state, driver: 'process', command: ['x'], env: {} } });
    const live = await row('live', mine.id, 'h-1', 'running');
    const missing = await row('lost', mine.id, 'h-1', 'missing');
    const done = await row('done', mine.id, 'h-1', 'stopped');
    await row('elsewhere', mine.id, 'h-offline', 'running');
    await row('not-mine', other.id, 'h-1', 'running');

    const ids = (rows: { id: string }[]) => rows.map((r) => r.id).sort();
    expect(ids(await service.list(mine.id, { hostId: 'h-1' }))).toEqual(ids([live, missing, done]));
    expect(ids(await service.list(mine.id, { hostId: 'h-1', excludeTerminal: true }))).toEqual(ids([live, missing]));
    expect((await service.list(null, { hostId: 'h-1', excludeTerminal: true })).map((r) => r.name)).toEqual(expect.arrayContaining(['live', 'lost', 'not-mine']));
  });

  // Tests above point the host at a dead agent: these need the scripted one.
  const useScriptedAgent = () =>
    beforeEach(() => {
      const h1 = hosts.find((h) => h.id === 'h-1');
      if (h1) h1.agentAddress = agent.address;
    });

  describe('image, resources, routes and ports', () => {
    useScriptedAgent();
    const routes = [
      { name: 'http', port: 8080 },
      { name: 'dns', port: 53, protocol: 'udp' },
    ];

    it('stores the spec, passes it to the agent and keeps the ports the agent answers with', async () => {
      const w = await service.create({ teamId: null, name: 'web-routes', driver: 'process', command: ['/bin/server'], resources: { vcpus: 1, memoryMb: 256 }, routes });
      expect(started.at(-1)).toMatchObject({
        workloadId: w.id,
        image: '',
        resources: { vcpus: 1, memoryMb: 256 },
        routes: [
          { name: 'http', port: 8080, protocol: 'tcp' },
          { name: 'dns', port: 53, protocol: 'udp' },
        ],
        vm: undefined,
      });
      expect(w).toMatchObject({
        state: 'running',
        resources: { vcpus: 1, memoryMb: 256 },
        routes: [
          { name: 'http', port: 8080, protocol: 'tcp' },
          { name: 'dns', port: 53, protocol: 'udp' },
        ],
        ports: [
          { name: 'http', guestPort: 8080, hostPort: 20000, protocol: 'tcp' },
          { name: 'dns', guestPort: 53, hostPort: 20001, protocol: 'udp' },
        ],
      });
      expect(workloadToProto(w)).toMatchObject({
        image: '',
        resources: { vcpus: 1, memoryMb: 256 },
        routes: [
          { name: 'http', port: 8080, protocol: 'tcp' },
          { name: 'dns', port: 53, protocol: 'udp' },
        ],
        ports: [
          { name: 'http', guestPort: 8080, hostPort: 20000, protocol: 'tcp' },
          { name: 'dns', guestPort: 53, hostPort: 20001, protocol: 'udp' },
        ],
        vm: undefined,
      });
    });

    it('stores image and vm, and shows no resources when none were asked for', async () => {
      hosts.push({ id: 'h-vm', name: 'vm-host', status: 'online', teamId: null, drivers: [{ name: 'qemu', healthy: true }], agentAddress: agent.address });
      await db.prisma.host.create({ data: { id: 'h-vm', name: 'vm-host', status: 'online', agentAddress: agent.address, capacity: {}, drivers: [] } });
      const w = await service.create({ teamId: null, name: 'micro', driver: 'qemu', vm: { mode: 'microvm', kernel: '/boot/vmlinuz', kernelArgs: 'console=ttyS0' } });
      expect(w).toMatchObject({ hostId: 'h-vm', image: null, vm: { mode: 'microvm', kernel: '/boot/vmlinuz', kernelArgs: 'console=ttyS0' }, ports: [] });
      expect(started.at(-1)).toMatchObject({ command: [], vm: { mode: 'microvm', kernel: '/boot/vmlinuz', initrd: '', kernelArgs: 'console=ttyS0' } });
      expect(workloadToProto(w)).toMatchObject({ resources: undefined, vm: { mode: 'microvm', kernel: '/boot/vmlinuz', initrd: '', kernelArgs: 'console=ttyS0' } });
      const pod = await service.create({ teamId: null, name: 'pod', driver: 'qemu', image: '/images/uk.img', vm: { mode: 'unikernel' } });
      expect(pod).toMatchObject({ image: '/images/uk.img', vm: { mode: 'unikernel' } });
    });

    it('refuses invalid routes naming the field, writing nothing', async () => {
      const before = await db.prisma.workload.count();
      await expect(
        service.create({ teamId: null, name: 'bad', driver: 'process', command: ['x'], routes: [{ name: 'a', port: 80 }, { name: 'b', port: 70000 }] }),
      ).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'routes[1].port' });
      expect(await db.prisma.workload.count()).toBe(before);
    });

    it('keeps the ports of a start answer that lost the race to the state event of the same seq', async () => {
      const w = await service.create({ teamId: null, name: 'race', driver: 'process', command: ['x'] });
      const n = Number(w.stateSeq) + 1;
      expect(await store.applyAgentReport(w.id, { seq: n, state: 'running', exited: false, exitCode: 0, reason: '' }, 'event')).toBe(true);
      const ports = [{ name: 'http', guestPort: 80, hostPort: 20500, protocol: 'tcp' }];
      expect(await store.applyAgentReport(w.id, { seq: n, state: 'running', exited: false, exitCode: 0, reason: '', ports }, 'start-response')).toBe(false);
      expect((await store.get(w.id, null)).ports).toEqual(ports);
      // An older answer changes nothing, ports included.
      expect(await store.applyAgentReport(w.id, { seq: n - 1, state: 'running', exited: false, exitCode: 0, reason: '', ports: [] }, 'late')).toBe(false);
      expect((await store.get(w.id, null)).ports).toEqual(ports);
      // Stopped for good: the agent released them.
      expect(await store.applyAgentReport(w.id, { seq: n + 1, state: 'stopped', exited: true, exitCode: 0, reason: '' }, 'event')).toBe(true);
      expect((await store.get(w.id, null)).ports).toEqual([]);
      // A late answer from before the stop does not bring them back.
      expect(await store.applyAgentReport(w.id, { seq: n, state: 'running', exited: false, exitCode: 0, reason: '', ports }, 'late')).toBe(false);
      expect((await store.get(w.id, null)).ports).toEqual([]);
    });

    it('asks the agent for the ports when an event brings a workload with routes to life and its start answer was lost', async () => {
      const w = await service.create({ teamId: null, name: 'lost-answer', driver: 'process', command: ['x'], routes: [{ name: 'http', port: 80 }] });
      await db.prisma.workload.update({ where: { id: w.id }, data: { state: 'failed', ports: [] } });
      await store.transition(w.id, ['failed'], 'provisioning', 'test: as if the start answer never came');
      expect(await service.applyEvent(w.id, { seq: Number(w.stateSeq) + 1, state: 'running', exited: false, exitCode: 0, reason: '' })).toBe(true);
      expect(inspected).toContain(w.id);
      expect((await store.get(w.id, null)).ports).toEqual([{ name: 'http', guestPort: 80, hostPort: 20000, protocol: 'tcp' }]);
    });

    it('stopping clears the ports', async () => {
      const w = await service.create({ teamId: null, name: 'stop-ports', driver: 'process', command: ['x'], routes: [{ name: 'http', port: 80 }] });
      expect(w.ports).toHaveLength(1);
      expect(await service.stop(w.id, null)).toMatchObject({ state: 'stopped', ports: [] });
    });
  });

  describe('pause and resume', () => {
    useScriptedAgent();
    it('pauses and resumes through the agent; repeating either returns the workload unchanged', async () => {
      const w = await service.create({ teamId: null, name: 'pausable', driver: 'process', command: ['x'], routes: [{ name: 'http', port: 80 }] });
      const paused = await service.pause(w.id, null);
      expect(paused).toMatchObject({ state: 'paused', ports: w.ports });
      const seqAfter = seq;
      expect(await service.pause(w.id, null)).toMatchObject({ state: 'paused', stateSeq: paused.stateSeq });
      expect(seq).toBe(seqAfter); // not asked again
      expect(await service.resume(w.id, null)).toMatchObject({ state: 'running' });
      expect(await service.resume(w.id, null)).toMatchObject({ state: 'running' });
      const events = await db.prisma.workloadEvent.findMany({ where: { workloadId: w.id }, orderBy: { createdAt: 'asc' } });
      expect(events.map((e) => e.state)).toEqual(['pending', 'provisioning', 'running', 'paused', 'running']);
      // A paused workload can be stopped.
      await service.pause(w.id, null);
      expect(await service.stop(w.id, null)).toMatchObject({ state: 'stopped' });
    });

    it('refuses stopped workloads, drivers that cannot pause and workloads their host forgot, as failed preconditions', async () => {
      const w = await service.create({ teamId: null, name: 'nopause', driver: 'process', command: ['x'] });
      pauseAnswer = 'cannot-pause';
      try {
        await expect(service.pause(w.id, null)).rejects.toMatchObject({ name: 'FailedPreconditionError', message: 'driver podman cannot pause' });
        pauseAnswer = 'not-found';
        await expect(service.pause(w.id, null)).rejects.toMatchObject({ name: 'FailedPreconditionError', message: expect.stringContaining('unknown to its host') });
      } finally {
        pauseAnswer = 'ok';
      }
      expect((await store.get(w.id, null)).state).toBe('running');
      await service.stop(w.id, null);
      await expect(service.pause(w.id, null)).rejects.toMatchObject({ name: 'FailedPreconditionError', message: expect.stringContaining('it is stopped') });
      await expect(service.resume(w.id, null)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
      await expect(service.pause('00000000-0000-0000-0000-000000000000', null)).rejects.toMatchObject({ name: 'NotFoundError' });
    });
  });

  describe('destroy', () => {
    useScriptedAgent();
    const statesOf = async (id: string) => (await db.prisma.workloadEvent.findMany({ where: { workloadId: id }, orderBy: { createdAt: 'asc' } })).map((e) => e.state);
    const newStopped = async (name: string) => {
      const w = await service.create({ teamId: null, name, driver: 'process', command: ['x'] });
      return service.stop(w.id, null);
    };

    it('tears a stopped workload down: tearing_down first, the agent, then retired; again changes nothing', async () => {
      const w = await newStopped('rm-stopped');
      const retired = await service.destroy(w.id, null);
      expect(retired).toMatchObject({ state: 'retired', ports: [] });
      expect(destroyed.at(-1)).toMatchObject({ workloadId: w.id, force: false });
      const states = await statesOf(w.id);
      expect(states.slice(states.indexOf('stopped'))).toEqual(['stopped', 'tearing_down', 'retired']);
      const calls = destroyed.length;
      expect(await service.destroy(w.id, null)).toMatchObject({ state: 'retired', stateSeq: retired.stateSeq });
      expect(destroyed).toHaveLength(calls);
    });

    it('refuses a live workload unless forced, asking nothing of the agent; forced, the agent stops it first', async () => {
      const w = await service.create({ teamId: null, name: 'rm-live', driver: 'process', command: ['x'] });
      const calls = destroyed.length;
      await expect(service.destroy(w.id, null)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
      expect(destroyed).toHaveLength(calls);
      expect((await service.get(w.id, null)).state).toBe('running');
      expect(await service.destroy(w.id, null, { force: true, timeoutSeconds: 3 })).toMatchObject({ state: 'retired' });
      expect(destroyed.at(-1)).toMatchObject({ workloadId: w.id, force: true, timeoutSeconds: 3 });
    });

    it("hides another team's workload as not found", async () => {
      const team = await db.prisma.team.create({ data: { name: 'rm-team' } });
      const w = await db.prisma.workload.create({ data: { name: 'theirs', teamId: team.id, hostId: 'h-1', state: 'stopped', driver: 'process', command: ['x'], env: {} } });
      await expect(service.destroy(w.id, 'another-team')).rejects.toMatchObject({ name: 'NotFoundError' });
      expect((await service.get(w.id, null)).state).toBe('stopped');
      expect(await service.destroy(w.id, team.id)).toMatchObject({ state: 'retired' });
    });

    it('a host that does not know the workload any more: retired all the same', async () => {
      const w = await newStopped('rm-unknown');
      destroyAnswer = 'unknown';
      try {
        expect(await service.destroy(w.id, null)).toMatchObject({ state: 'retired' });
      } finally {
        destroyAnswer = 'ok';
      }
    });

    it('a host that refuses withdraws the intent and passes the refusal on', async () => {
      const w = await newStopped('rm-refused');
      destroyAnswer = 'refuse';
      try {
        await expect(service.destroy(w.id, null)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
      } finally {
        destroyAnswer = 'ok';
      }
      expect((await service.get(w.id, null)).state).toBe('stopped');
    });

    it('a host that is deleted or down: retired with the reason, without asking it', async () => {
      const gone = await newStopped('rm-host-deleted');
      const down = await newStopped('rm-host-down');
      const live = await service.create({ teamId: null, name: 'rm-host-deleted-live', driver: 'process', command: ['x'] });
      hosts.push({ id: 'h-down', name: 'down', status: 'down', teamId: null, drivers: [], agentAddress: agent.address });
      // h-deleted is soft-deleted in host-registry: the directory no longer knows it.
      for (const id of ['h-down', 'h-deleted']) await db.prisma.host.create({ data: { id, name: id, status: 'down', agentAddress: agent.address, capacity: {}, drivers: [] } });
      await db.prisma.workload.updateMany({ where: { id: { in: [gone.id, live.id] } }, data: { hostId: 'h-deleted' } });
      await db.prisma.workload.update({ where: { id: down.id }, data: { hostId: 'h-down' } });
      const calls = destroyed.length;
      expect(await service.destroy(gone.id, null)).toMatchObject({ state: 'retired', reason: 'retired without teardown: its host is deleted' });
      expect(await service.destroy(down.id, null)).toMatchObject({ state: 'retired', reason: 'retired without teardown: its host is down' });
      await expect(service.destroy(live.id, null)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
      expect(await service.destroy(live.id, null, { force: true })).toMatchObject({ state: 'retired', reason: 'retired without teardown: its host is deleted' });
      expect(destroyed).toHaveLength(calls);
    });

    it('an unreachable agent leaves it tearing_down (visible, not hidden); calling again finishes it', async () => {
      const w = await newStopped('rm-unreachable');
      const h1 = hosts.find((h) => h.id === 'h-1');
      if (!h1) throw new Error('host h-1 is missing');
      h1.agentAddress = `127.0.0.1:${await freePort()}`;
      await expect(service.destroy(w.id, null)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      expect((await service.get(w.id, null)).state).toBe('tearing_down');
      // A stop of a workload being torn down does not bring it back.
      expect(await service.stop(w.id, null)).toMatchObject({ state: 'tearing_down' });
      h1.agentAddress = agent.address;
      expect(await service.destroy(w.id, null)).toMatchObject({ state: 'retired' });
    });
  });
});
