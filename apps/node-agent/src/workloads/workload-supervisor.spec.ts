import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Topic } from '@corral/events';
import { silentLogger } from '@corral/logging';
import type { WorkloadStateChanged } from '@corral/proto';
import { eventually } from '@corral/testing';
import { DriverRegistry } from '../drivers/driver-registry';
import { FakeDriver, FakeMachine, PausableFakeDriver } from '../drivers/fake/fake-driver';
import { PortAllocator, type HostPortProbe } from '../ports';
import { WorkloadSupervisor, type StateEventPublisher } from './workload-supervisor';
import type { WorkloadSpecInput } from './spec-validation';

// The supervisor over the fake driver: state sequences, seq, idempotency,
// persistence and re-adoption, with a bus that records what was published.

class RecordingBus implements StateEventPublisher {
  readonly events: Array<{ topic: string; key: string; message: WorkloadStateChanged }> = [];
  publish<T>(topic: Topic<T>, key: string, message: T): void {
    this.events.push({ topic: topic.name, key, message: message as unknown as WorkloadStateChanged });
  }
  of(workloadId: string): WorkloadStateChanged[] {
    return this.events.filter((e) => e.key === workloadId).map((e) => e.message);
  }
  statesOf(workloadId: string): string[] {
    return this.of(workloadId).map((m) => m.state);
  }
}

const spec = (workloadId: string, overrides: Partial<WorkloadSpecInput> = {}): WorkloadSpecInput => ({
  workloadId,
  name: 'web',
  driver: 'process',
  command: ['/bin/server', '--port', '8080'],
  env: { API_TOKEN: 'hunter2' },
  labels: { team: 't1' },
  ...overrides,
});

describe('WorkloadSupervisor', () => {
  let stateDir: string;
  let machine: FakeMachine;
  let driver: FakeDriver;
  let bus: RecordingBus;
  let supervisor: WorkloadSupervisor;

  const newSupervisor = async (options: { driver?: FakeDriver; stopOverrunMs?: number; ports?: PortAllocator } = {}) => {
    const registry = new DriverRegistry(silentLogger);
    if (options.driver) registry.register(options.driver);
    const s = new WorkloadSupervisor({
      hostId: 'host-1',
      stateDir,
      drivers: registry,
      bus,
      logger: silentLogger,
      stopOverrunMs: options.stopOverrunMs,
      ports: options.ports,
    });
    await s.recover();
    return s;
  };

  beforeEach(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-supervisor-'));
    machine = new FakeMachine();
    // Poses as `process`: the domain only accepts the driver names Corral knows.
    driver = new FakeDriver({ name: 'process', machine });
    bus = new RecordingBus();
    supervisor = await newSupervisor({ driver });
  });

  afterEach(async () => {
    await supervisor.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("sends the host's current JWT with every state change, read at publish time", async () => {
    const registry = new DriverRegistry(silentLogger);
    registry.register(driver);
    let token = 'jwt-1';
    const withToken = new WorkloadSupervisor({ hostId: 'host-1', stateDir, drivers: registry, bus, logger: silentLogger, hostToken: () => token });
    await withToken.recover();
    try {
      machine.script('w-token', { exitAfterMs: 5000, exitCode: 0 });
      await withToken.start(spec('w-token'));
      token = 'jwt-2';
      await withToken.stop('w-token', { timeoutMs: 1000 });
      const tokens = bus.of('w-token').map((m) => m.hostToken);
      expect(tokens.slice(0, 2)).toEqual(['jwt-1', 'jwt-1']);
      expect(tokens.at(-1)).toBe('jwt-2');
    } finally {
      await withToken.close();
    }
  });

  // Settled once the final state is also published: the supervisor publishes
  // only after the state is on disk, so in-memory state can be ahead.
  const settled = (id: string) =>
    eventually(
      () => {
        const view = supervisor.inspect(id);
        if (!['stopped', 'failed'].includes(view.state)) return undefined;
        return bus.statesOf(id).at(-1) === `INSTANCE_STATE_${view.state.toUpperCase()}` ? view : undefined;
      },
      { timeoutMs: 5000 },
    );

  it('exit 0: provisioning → running → stopped, one event per change with increasing seq', async () => {
    machine.script('w-ok', { exitAfterMs: 20, exitCode: 0 });
    const started = await supervisor.start(spec('w-ok'));
    expect(started).toMatchObject({ state: 'running', seq: 2, exited: false, handle: expect.stringMatching(/^fake-/) });
    const done = await settled('w-ok');
    expect(done).toMatchObject({ state: 'stopped', exited: true, exitCode: 0, seq: 3 });
    expect(bus.statesOf('w-ok')).toEqual(['INSTANCE_STATE_PROVISIONING', 'INSTANCE_STATE_RUNNING', 'INSTANCE_STATE_STOPPED']);
    expect(bus.of('w-ok').map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(bus.of('w-ok')[2]).toMatchObject({ workloadId: 'w-ok', hostId: 'host-1', exited: true, exitCode: 0, at: expect.any(Date) });
    expect(bus.events.every((e) => e.topic === 'workloadState')).toBe(true);
  });

  it('exit 3: running → failed with the exit code', async () => {
    machine.script('w-bad', { exitAfterMs: 10, exitCode: 3 });
    await supervisor.start(spec('w-bad'));
    expect(await settled('w-bad')).toMatchObject({ state: 'failed', exitCode: 3, reason: 'exited with code 3' });
    expect(bus.of('w-bad').at(-1)).toMatchObject({ state: 'INSTANCE_STATE_FAILED', exited: true, exitCode: 3, reason: 'exited with code 3' });
  });

  it('stop: running → stopping → stopped; stopping again changes nothing', async () => {
    await supervisor.start(spec('w-stop'));
    const stopped = await supervisor.stop('w-stop', { timeoutMs: 1000, signal: 'SIGTERM' });
    expect(stopped).toMatchObject({ state: 'stopped', exited: true, exitCode: 143, seq: 4 });
    expect(stopped.reason).toMatch(/^stopped on request/);
    expect(bus.statesOf('w-stop')).toEqual(['INSTANCE_STATE_PROVISIONING', 'INSTANCE_STATE_RUNNING', 'INSTANCE_STATE_STOPPING', 'INSTANCE_STATE_STOPPED']);
    expect(driver.calls.filter((c) => c.method === 'stop')).toEqual([{ method: 'stop', workloadId: 'w-stop', options: { timeoutMs: 1000, signal: 'SIGTERM' } }]);

    const again = await supervisor.stop('w-stop');
    expect(again).toEqual(stopped);
    expect(bus.of('w-stop')).toHaveLength(4);
    expect(driver.calls.filter((c) => c.method === 'stop')).toHaveLength(1);
  });

  it('concurrent stops share one stop', async () => {
    await supervisor.start(spec('w-twice'));
    const [a, b] = await Promise.all([supervisor.stop('w-twice'), supervisor.stop('w-twice')]);
    expect(a.state).toBe('stopped');
    expect(b).toEqual(a);
    expect(driver.calls.filter((c) => c.method === 'stop')).toHaveLength(1);
  });

  it('a stopped workload whose process ignores the signal is killed after the timeout', async () => {
    machine.script('w-stubborn', { onStop: 'ignore-signal' });
    await supervisor.start(spec('w-stubborn'));
    const stopped = await supervisor.stop('w-stubborn', { timeoutMs: 50 });
    expect(stopped).toMatchObject({ state: 'stopped', exitCode: 128 + 9 });
    expect(stopped.reason).toContain('killed by SIGKILL');
  });

  it('a stop the driver never finishes fails as unavailable and leaves the workload stopping', async () => {
    await supervisor.close();
    supervisor = await newSupervisor({ driver, stopOverrunMs: 50 });
    machine.script('w-hang', { onStop: 'hang' });
    await supervisor.start(spec('w-hang'));
    await expect(supervisor.stop('w-hang', { timeoutMs: 50 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(supervisor.inspect('w-hang').state).toBe('stopping');
  });

  it('start is idempotent: a known id returns its record and starts nothing', async () => {
    const [a, b] = await Promise.all([supervisor.start(spec('w-idem')), supervisor.start(spec('w-idem'))]);
    expect(a).toEqual(b);
    const c = await supervisor.start(spec('w-idem', { command: ['/bin/other'] }));
    expect(c).toEqual(a);
    expect(driver.calls.filter((x) => x.method === 'start')).toHaveLength(1);
    expect(bus.of('w-idem')).toHaveLength(2);
  });

  it('a driver that cannot start leaves the workload failed with the reason', async () => {
    machine.script('w-nostart', { startError: new Error('boom at /secret/path') });
    const view = await supervisor.start(spec('w-nostart'));
    expect(view).toMatchObject({ state: 'failed', exited: false, reason: 'start failed: driver error' });
    expect(bus.statesOf('w-nostart')).toEqual(['INSTANCE_STATE_PROVISIONING', 'INSTANCE_STATE_FAILED']);
    // Stopping a failed workload is a no-op.
    expect(await supervisor.stop('w-nostart')).toEqual(view);
  });

  it('validates requests: unknown driver, disabled driver, bad spec, missing workload', async () => {
    await expect(supervisor.start(spec('w1', { driver: 'docker' }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'spec.driver' });
    await expect(supervisor.start(spec('w1', { driver: 'podman', image: 'busybox' }))).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', field: 'spec.driver' });
    await expect(supervisor.start(spec('w1', { command: [] }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'spec.command' });
    await expect(supervisor.start(spec('../etc'))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'spec.workloadId' });
    await expect(supervisor.start(spec('w1', { name: 'Not Valid' }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'spec.name' });
    expect(() => supervisor.inspect('nope')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    await expect(supervisor.stop('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(supervisor.readLogs('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(supervisor.list()).toEqual([]);
    expect(bus.events).toEqual([]);
  });

  it('reports a disabled driver as a failed precondition', async () => {
    const registry = new DriverRegistry(silentLogger).markUnavailable('process', 'disabled');
    const s = new WorkloadSupervisor({ hostId: 'h', stateDir, drivers: registry, bus, logger: silentLogger });
    await s.recover();
    await expect(s.start(spec('w1'))).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('disabled') });
  });

  it('persists each record privately, env included, and never publishes env', async () => {
    await supervisor.start(spec('w-persist'));
    const file = join(stateDir, 'workloads', 'w-persist.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(stateDir, 'workloads')).mode & 0o777).toBe(0o700);
    const saved = JSON.parse(readFileSync(file, 'utf8'));
    expect(saved).toMatchObject({ state: 'running', seq: 2, spec: { env: { API_TOKEN: 'hunter2' } } });
    expect(JSON.stringify(bus.events)).not.toContain('hunter2');
    expect(JSON.stringify(supervisor.list())).not.toContain('hunter2');
  });

  it('reads the tail of the logs', async () => {
    machine.script('w-logs', { logs: 'line one\nline two\n' });
    await supervisor.start(spec('w-logs'));
    expect((await supervisor.readLogs('w-logs')).data.toString()).toBe('line one\nline two\n');
    const tail = await supervisor.readLogs('w-logs', 9);
    expect(tail).toEqual({ data: Buffer.from('line two\n'), truncated: true });
  });

  it('after a restart, re-adopts live workloads, marks vanished ones lost, and seq keeps increasing', async () => {
    await supervisor.start(spec('w-live'));
    await supervisor.start(spec('w-gone'));
    machine.script('w-done', { exitAfterMs: 0, exitCode: 0 });
    await supervisor.start(spec('w-done'));
    await settled('w-done');
    await supervisor.close();

    // The "host": w-gone vanished while no agent was watching.
    machine.vanish('w-gone');
    const restartedDriver = new FakeDriver({ name: 'process', machine });
    const before = bus.events.length;
    supervisor = await newSupervisor({ driver: restartedDriver });

    expect(supervisor.inspect('w-live')).toMatchObject({ state: 'running', seq: 2 });
    expect(machine.isRunning('w-live')).toBe(true);
    expect(supervisor.inspect('w-done')).toMatchObject({ state: 'stopped', seq: 3 });
    expect(supervisor.inspect('w-gone')).toMatchObject({ state: 'failed', reason: 'lost', exited: true, seq: 3 });
    expect(bus.events.slice(before).map((e) => [e.key, e.message.state, e.message.seq, e.message.exitCode])).toEqual([
      ['w-gone', 'INSTANCE_STATE_FAILED', 3, -1],
    ]);
  });

  it('a re-adopted workload is watched again: its exit and stops are recorded with seq continuing', async () => {
    await supervisor.start(spec('w-a'));
    await supervisor.start(spec('w-b'));
    await supervisor.close();

    const restartedDriver = new FakeDriver({ name: 'process', machine });
    supervisor = await newSupervisor({ driver: restartedDriver });
    expect(supervisor.inspect('w-a')).toMatchObject({ state: 'running', seq: 2 });
    expect(restartedDriver.calls.filter((c) => c.method === 'recover').map((c) => c.workloadId).sort()).toEqual(['w-a', 'w-b']);

    machine.exit('w-a', { exitCode: 7 });
    expect(await settled('w-a')).toMatchObject({ state: 'failed', exitCode: 7, seq: 3 });
    expect(await supervisor.stop('w-b')).toMatchObject({ state: 'stopped', seq: 4 });
  });

  describe('host ports for routes', () => {
    /** Every port free: the allocator's own table is what is under test. */
    const anyPortFree: HostPortProbe = { isFree: async () => true };
    let ports: PortAllocator;
    const withRoutes = (workloadId: string, overrides: Partial<WorkloadSpecInput> = {}) =>
      spec(workloadId, {
        routes: [
          { name: 'http', port: 8080 },
          { name: 'dns', port: 53, protocol: 'udp' },
        ],
        ...overrides,
      });

    const restartWith = async (d: FakeDriver, range = { start: 20000, end: 20009 }) => {
      await supervisor.close();
      ports = new PortAllocator({ stateDir, logger: silentLogger, range, probe: anyPortFree });
      supervisor = await newSupervisor({ driver: d, ports });
    };

    beforeEach(async () => {
      await restartWith(driver);
    });

    it('allocates before starting, passes ports, image, resources and guest-port variables to a sandboxed driver, and reports them', async () => {
      const view = await supervisor.start(withRoutes('w-ports', { env: { PORT: 'mine', KEEP: 'me' }, resources: { vcpus: 2, memoryMb: 128 } }));
      const expected = [
        { name: 'http', guestPort: 8080, hostPort: 20000, protocol: 'tcp' },
        { name: 'dns', guestPort: 53, hostPort: 20001, protocol: 'udp' },
      ];
      expect(view).toMatchObject({ state: 'running', ports: expected });
      expect(await ports.get('w-ports')).toEqual(expected);
      const task = machine.specOf('w-ports');
      expect(task?.ports).toEqual(expected);
      expect(task?.resources).toEqual({ vcpus: 2, memoryMb: 128 });
      // Corral's variables win; the workload's own stay.
      expect(task?.env).toEqual({ KEEP: 'me', PORT: '8080', PORT_HTTP: '8080', PORT_DNS: '53' });
      expect(supervisor.inspect('w-ports').ports).toEqual(expected);
    });

    it('gives a host-network driver (process) the host ports to listen on', async () => {
      const hostNet = new FakeDriver({ name: 'process', machine, hostNetwork: true });
      await restartWith(hostNet);
      await supervisor.start(withRoutes('w-hostnet'));
      expect(machine.specOf('w-hostnet')?.env).toMatchObject({ PORT: '20000', PORT_HTTP: '20000', PORT_DNS: '20001' });
    });

    it('releases the ports once stopped, before the stop answers; stopping again is a no-op', async () => {
      await supervisor.start(withRoutes('w-release'));
      const stopped = await supervisor.stop('w-release', { timeoutMs: 100 });
      expect(stopped).toMatchObject({ state: 'stopped', ports: [] });
      expect(await ports.get('w-release')).toBeUndefined();
      expect(JSON.parse(readFileSync(join(stateDir, 'workloads', 'w-release.json'), 'utf8')).ports).toEqual([]);
      expect(await supervisor.stop('w-release')).toEqual(stopped);
      // The freed ports go to the next workload (next-fit: after the last ones handed out).
      const next = await supervisor.start(withRoutes('w-next', { routes: [{ name: 'http', port: 80 }] }));
      expect(next.ports).toEqual([{ name: 'http', guestPort: 80, hostPort: 20002, protocol: 'tcp' }]);
    });

    it('publishes with every state change the ports held at that seq, new ones after a restart', async () => {
      await supervisor.start(withRoutes('w-published'));
      await supervisor.stop('w-published', { timeoutMs: 100 });
      await supervisor.restart('w-published');
      const published = bus.of('w-published').map((m) => [m.seq, m.state, m.portsReported, m.ports.map((p) => `${p.name}:${p.guestPort}->${p.hostPort}/${p.protocol}`)]);
      expect(published).toEqual([
        [1, 'INSTANCE_STATE_PROVISIONING', true, []],
        [2, 'INSTANCE_STATE_RUNNING', true, ['http:8080->20000/tcp', 'dns:53->20001/udp']],
        [3, 'INSTANCE_STATE_STOPPING', true, ['http:8080->20000/tcp', 'dns:53->20001/udp']],
        // Released with the stop: nothing holds them any more.
        [4, 'INSTANCE_STATE_STOPPED', true, []],
        // The restarted run was allocated afresh (next-fit), and says so.
        [5, 'INSTANCE_STATE_PROVISIONING', true, []],
        [6, 'INSTANCE_STATE_RUNNING', true, ['http:8080->20002/tcp', 'dns:53->20003/udp']],
      ]);
    });

    it('releases the ports of a workload that exits by itself or fails to start', async () => {
      machine.script('w-exits', { exitAfterMs: 10, exitCode: 1 });
      await supervisor.start(withRoutes('w-exits'));
      expect(await settled('w-exits')).toMatchObject({ state: 'failed', ports: [] });
      expect(await ports.get('w-exits')).toBeUndefined();

      machine.script('w-nostart', { startError: new Error('boom') });
      expect(await supervisor.start(withRoutes('w-nostart'))).toMatchObject({ state: 'failed', ports: [] });
      expect(await ports.get('w-nostart')).toBeUndefined();
      expect(await ports.list()).toEqual({});
    });

    it('fails a workload the range has no room for, naming the reason, and leaves the others their ports', async () => {
      await restartWith(driver, { start: 20000, end: 20002 });
      await supervisor.start(withRoutes('w-first'));
      const second = await supervisor.start(withRoutes('w-second'));
      expect(second).toMatchObject({ state: 'failed', reason: expect.stringMatching(/^start failed: no free host port left in 20000-20002/) });
      expect(driver.calls.filter((c) => c.method === 'start').map((c) => c.workloadId)).toEqual(['w-first']);
      expect((await ports.get('w-first'))?.map((p) => p.hostPort)).toEqual([20000, 20001]);
      expect(await ports.get('w-second')).toBeUndefined();
    });

    it('keeps ports across an agent restart, releases those of lost workloads and leftovers', async () => {
      const live = await supervisor.start(withRoutes('w-keep'));
      await supervisor.start(withRoutes('w-lost'));
      // A leftover: an allocation whose workload the agent has no record of.
      await ports.allocate('w-ghost', [{ name: 'http', guestPort: 1, protocol: 'tcp' }]);
      machine.vanish('w-lost');
      await restartWith(new FakeDriver({ name: 'process', machine }));
      expect(supervisor.inspect('w-keep').ports).toEqual(live.ports);
      expect(supervisor.inspect('w-lost')).toMatchObject({ state: 'failed', reason: 'lost', ports: [] });
      expect(Object.keys(await ports.list())).toEqual(['w-keep']);
    });
  });

  describe('pause and resume', () => {
    let pausable: PausableFakeDriver;
    beforeEach(async () => {
      await supervisor.close();
      pausable = new PausableFakeDriver({ name: 'process', machine });
      supervisor = await newSupervisor({ driver: pausable });
    });

    it('running → paused → running, one published change each; repeating either changes nothing', async () => {
      await supervisor.start(spec('w-pause'));
      const paused = await supervisor.pause('w-pause');
      expect(paused).toMatchObject({ state: 'paused', seq: 3 });
      expect(machine.isPaused('w-pause')).toBe(true);
      expect(await supervisor.pause('w-pause')).toEqual(paused);
      const resumed = await supervisor.resume('w-pause');
      expect(resumed).toMatchObject({ state: 'running', seq: 4 });
      expect(machine.isPaused('w-pause')).toBe(false);
      expect(await supervisor.resume('w-pause')).toEqual(resumed);
      expect(bus.statesOf('w-pause')).toEqual(['INSTANCE_STATE_PROVISIONING', 'INSTANCE_STATE_RUNNING', 'INSTANCE_STATE_PAUSED', 'INSTANCE_STATE_RUNNING']);
      expect(pausable.calls.filter((c) => c.method === 'pause' || c.method === 'resume').map((c) => c.method)).toEqual(['pause', 'resume']);
      expect(JSON.parse(readFileSync(join(stateDir, 'workloads', 'w-pause.json'), 'utf8')).state).toBe('running');
    });

    it('concurrent pauses share the work; a paused workload can be stopped', async () => {
      await supervisor.start(spec('w-both'));
      const [a, b] = await Promise.all([supervisor.pause('w-both'), supervisor.pause('w-both')]);
      expect(a).toEqual(b);
      expect(pausable.calls.filter((c) => c.method === 'pause')).toHaveLength(1);
      expect(await supervisor.stop('w-both', { timeoutMs: 100 })).toMatchObject({ state: 'stopped' });
      expect(bus.statesOf('w-both').slice(-3)).toEqual(['INSTANCE_STATE_PAUSED', 'INSTANCE_STATE_STOPPING', 'INSTANCE_STATE_STOPPED']);
    });

    it('refuses to pause or resume a workload in the wrong state', async () => {
      await supervisor.start(spec('w-wrong'));
      await supervisor.stop('w-wrong', { timeoutMs: 100 });
      await expect(supervisor.pause('w-wrong')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('it is stopped') });
      await expect(supervisor.resume('w-wrong')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('it is stopped') });
      await expect(supervisor.pause('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    });

    it('a paused workload stays paused across an agent restart', async () => {
      await supervisor.start(spec('w-frozen'));
      await supervisor.pause('w-frozen');
      await supervisor.close();
      supervisor = await newSupervisor({ driver: new PausableFakeDriver({ name: 'process', machine }) });
      expect(supervisor.inspect('w-frozen')).toMatchObject({ state: 'paused', seq: 3 });
      expect(await supervisor.resume('w-frozen')).toMatchObject({ state: 'running', seq: 4 });
    });
  });

  it('a driver without the pause capability cannot pause', async () => {
    await supervisor.start(spec('w-nopause'));
    await expect(supervisor.pause('w-nopause')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: 'driver process cannot pause' });
    await expect(supervisor.resume('w-nopause')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: 'driver process cannot pause' });
    expect(supervisor.inspect('w-nopause').state).toBe('running');
  });
});
