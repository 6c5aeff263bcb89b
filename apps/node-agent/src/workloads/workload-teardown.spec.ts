import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FailedPreconditionError, UnavailableError } from '@corral/domain';
import type { Topic } from '@corral/events';
import { silentLogger } from '@corral/logging';
import type { WorkloadStateChanged } from '@corral/proto';
import { eventually } from '@corral/testing';
import { DriverRegistry } from '../drivers/driver-registry';
import { FakeDriver, FakeMachine } from '../drivers/fake/fake-driver';
import { PortAllocator, type HostPortProbe } from '../ports';
import { WorkloadSupervisor, type StateEventPublisher } from './workload-supervisor';
import type { WorkloadSpecInput } from './spec-validation';

// Teardown over the scripted fake driver: the order of the steps (intent
// first, record last), refusal of live workloads, force, idempotency, a
// destroy that fails once, and a crash mid-teardown finished by the next
// agent start.

class RecordingBus implements StateEventPublisher {
  readonly events: Array<{ key: string; message: WorkloadStateChanged }> = [];
  publish<T>(_topic: Topic<T>, key: string, message: T): void {
    this.events.push({ key, message: message as unknown as WorkloadStateChanged });
  }
  statesOf(workloadId: string): string[] {
    return this.events.filter((e) => e.key === workloadId).map((e) => e.message.state);
  }
  seqsOf(workloadId: string): number[] {
    return this.events.filter((e) => e.key === workloadId).map((e) => e.message.seq);
  }
}

/** A volume manager that records removals and fails on demand. */
class RecordingVolumes {
  readonly removed: string[] = [];
  failNext: Error | undefined;
  async remove(workloadId: string): Promise<void> {
    this.removed.push(workloadId);
    const failure = this.failNext;
    this.failNext = undefined;
    if (failure) throw failure;
  }
}

const freeProbe: HostPortProbe = { isFree: async () => true };

const spec = (workloadId: string, overrides: Partial<WorkloadSpecInput> = {}): WorkloadSpecInput => ({
  workloadId,
  name: 'web',
  driver: 'process',
  command: ['/bin/server'],
  env: {},
  labels: {},
  ...overrides,
});

describe('WorkloadSupervisor teardown', () => {
  let stateDir: string;
  let machine: FakeMachine;
  let driver: FakeDriver;
  let bus: RecordingBus;
  let volumes: RecordingVolumes;
  let supervisor: WorkloadSupervisor;

  const newSupervisor = async () => {
    const registry = new DriverRegistry(silentLogger);
    // A new driver over the same machine: what an agent restart looks like.
    driver = new FakeDriver({ name: 'process', machine });
    registry.register(driver);
    const ports = new PortAllocator({ stateDir, logger: silentLogger, range: { start: 42000, end: 42009 }, probe: freeProbe });
    const s = new WorkloadSupervisor({ hostId: 'host-1', stateDir, drivers: registry, bus, logger: silentLogger, ports, volumes });
    await s.recover();
    return { s, ports };
  };

  let ports: PortAllocator;
  beforeEach(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-teardown-'));
    machine = new FakeMachine();
    bus = new RecordingBus();
    volumes = new RecordingVolumes();
    ({ s: supervisor, ports } = await newSupervisor());
  });

  afterEach(async () => {
    await supervisor.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  const recordFile = (id: string) => join(stateDir, 'workloads', `${id}.json`);

  it('a stopped workload: tearing_down → driver destroy, volume, ports, snapshots → retired, then the record is gone', async () => {
    await supervisor.start(spec('w-1', { routes: [{ name: 'http', port: 8080, protocol: 'tcp' }] }));
    expect(Object.keys(await ports.list())).toEqual(['w-1']);
    await supervisor.stop('w-1', { timeoutMs: 100 });
    const snapshots = join(stateDir, 'snapshots', 'w-1');
    mkdirSync(snapshots, { recursive: true });
    writeFileSync(join(snapshots, 'snap-1-00.state'), 'x');

    const retired = await supervisor.destroy('w-1');

    expect(retired).toMatchObject({ workloadId: 'w-1', state: 'retired', seq: 6, ports: [] });
    expect(bus.statesOf('w-1').slice(-2)).toEqual(['INSTANCE_STATE_TEARING_DOWN', 'INSTANCE_STATE_RETIRED']);
    expect(bus.seqsOf('w-1')).toEqual([1, 2, 3, 4, 5, 6]);
    expect(driver.calls.filter((c) => c.method === 'destroy')).toEqual([{ method: 'destroy', workloadId: 'w-1', options: { force: true } }]);
    expect(volumes.removed).toEqual(['w-1']);
    expect(await ports.list()).toEqual({});
    expect(existsSync(snapshots)).toBe(false);
    expect(existsSync(recordFile('w-1'))).toBe(false);
    expect(supervisor.list()).toEqual([]);
    expect(() => supervisor.inspect('w-1')).toThrow(/not on this host/);
  });

  it('is idempotent: an unknown or already destroyed workload answers undefined and touches nothing', async () => {
    expect(await supervisor.destroy('never-here')).toBeUndefined();
    await supervisor.start(spec('w-2'));
    await supervisor.stop('w-2', { timeoutMs: 100 });
    await supervisor.destroy('w-2');
    const events = bus.events.length;
    expect(await supervisor.destroy('w-2')).toBeUndefined();
    expect(bus.events).toHaveLength(events);
    expect(driver.calls.filter((c) => c.method === 'destroy')).toHaveLength(1);
  });

  it('concurrent destroys share one teardown', async () => {
    await supervisor.start(spec('w-3'));
    await supervisor.stop('w-3', { timeoutMs: 100 });
    const [a, b] = await Promise.all([supervisor.destroy('w-3'), supervisor.destroy('w-3')]);
    expect(a).toEqual(b);
    expect(a?.state).toBe('retired');
    expect(driver.calls.filter((c) => c.method === 'destroy')).toHaveLength(1);
    expect(bus.statesOf('w-3').filter((s) => s === 'INSTANCE_STATE_RETIRED')).toHaveLength(1);
  });

  it('refuses a live workload unless forced; force stops it first (the stop signal), then tears it down', async () => {
    await supervisor.start(spec('w-live'));
    await expect(supervisor.destroy('w-live')).rejects.toBeInstanceOf(FailedPreconditionError);
    expect(supervisor.inspect('w-live').state).toBe('running');
    expect(driver.calls.some((c) => c.method === 'destroy')).toBe(false);

    const retired = await supervisor.destroy('w-live', { force: true, timeoutMs: 250 });
    expect(retired?.state).toBe('retired');
    expect(driver.calls.filter((c) => c.method === 'stop')).toEqual([{ method: 'stop', workloadId: 'w-live', options: { timeoutMs: 250, signal: 'SIGTERM' } }]);
    expect(bus.statesOf('w-live')).toEqual([
      'INSTANCE_STATE_PROVISIONING',
      'INSTANCE_STATE_RUNNING',
      'INSTANCE_STATE_STOPPING',
      'INSTANCE_STATE_STOPPED',
      'INSTANCE_STATE_TEARING_DOWN',
      'INSTANCE_STATE_RETIRED',
    ]);
    expect(machine.isRunning('w-live')).toBe(false);
  });

  it('a failed workload that never started (no handle) is torn down without its driver', async () => {
    machine.script('w-nostart', { startError: new Error('boom') });
    expect((await supervisor.start(spec('w-nostart'))).state).toBe('failed');
    expect((await supervisor.destroy('w-nostart'))?.state).toBe('retired');
    expect(driver.calls.some((c) => c.method === 'destroy')).toBe(false);
    expect(existsSync(recordFile('w-nostart'))).toBe(false);
  });

  it('a driver destroy that fails leaves the record tearing_down; the retry finishes it', async () => {
    await supervisor.start(spec('w-flaky'));
    await supervisor.stop('w-flaky', { timeoutMs: 100 });
    machine.failDestroy('w-flaky', new UnavailableError('podman is busy'));

    await expect(supervisor.destroy('w-flaky')).rejects.toThrow('podman is busy');
    expect(supervisor.inspect('w-flaky').state).toBe('tearing_down');
    expect(JSON.parse(readFileSync(recordFile('w-flaky'), 'utf8')).state).toBe('tearing_down');
    // Nothing that comes after the driver's destroy was done yet.
    expect(volumes.removed).toEqual([]);

    const retired = await supervisor.destroy('w-flaky');
    expect(retired?.state).toBe('retired');
    expect(driver.calls.filter((c) => c.method === 'destroy')).toHaveLength(2);
    expect(bus.statesOf('w-flaky').filter((s) => s === 'INSTANCE_STATE_TEARING_DOWN')).toHaveLength(1);
    expect(existsSync(recordFile('w-flaky'))).toBe(false);
  });

  it('a crash after the driver destroy (before the record is dropped) is finished by the next agent start', async () => {
    await supervisor.start(spec('w-crash', { routes: [{ name: 'http', port: 8080, protocol: 'tcp' }] }));
    await supervisor.stop('w-crash', { timeoutMs: 100 });
    // The driver's destroy succeeds, then the agent "dies" at the volume step.
    volumes.failNext = new Error('killed mid-teardown');
    await expect(supervisor.destroy('w-crash')).rejects.toThrow('killed mid-teardown');
    expect(driver.calls.filter((c) => c.method === 'destroy')).toHaveLength(1);
    await supervisor.close();

    const restarted = await newSupervisor();
    supervisor = restarted.s;
    // recover() started the teardown again; destroy joins it (or finds it done).
    await eventually(() => (existsSync(recordFile('w-crash')) ? undefined : true), { timeoutMs: 5000 });
    expect(await supervisor.destroy('w-crash')).toBeUndefined();
    expect(supervisor.list()).toEqual([]);
    expect(driver.calls.filter((c) => c.method === 'destroy')).toEqual([{ method: 'destroy', workloadId: 'w-crash', options: { force: true } }]);
    expect(volumes.removed).toEqual(['w-crash', 'w-crash']);
    expect(await restarted.ports.list()).toEqual({});
    const states = bus.statesOf('w-crash');
    expect(states.slice(-2)).toEqual(['INSTANCE_STATE_TEARING_DOWN', 'INSTANCE_STATE_RETIRED']);
    // seq keeps increasing across the restart.
    const seqs = bus.seqsOf('w-crash');
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
  });

  it('a record already retired when the agent died is only deleted at the next start', async () => {
    await supervisor.start(spec('w-retired'));
    await supervisor.stop('w-retired', { timeoutMs: 100 });
    await supervisor.close();
    // As if the agent died right after persisting (and publishing) retired.
    const record = JSON.parse(readFileSync(recordFile('w-retired'), 'utf8'));
    writeFileSync(recordFile('w-retired'), JSON.stringify({ ...record, state: 'retired', seq: record.seq + 2 }));
    const events = bus.events.length;

    ({ s: supervisor } = await newSupervisor());
    await eventually(() => (existsSync(recordFile('w-retired')) ? undefined : true), { timeoutMs: 5000 });
    expect(driver.calls.some((c) => c.method === 'destroy')).toBe(false);
    expect(bus.events).toHaveLength(events);
    expect(supervisor.list()).toEqual([]);
  });

  it('a stop leaves a workload being torn down alone', async () => {
    await supervisor.start(spec('w-leaving'));
    await supervisor.stop('w-leaving', { timeoutMs: 100 });
    machine.failDestroy('w-leaving', new UnavailableError('later'));
    await expect(supervisor.destroy('w-leaving')).rejects.toThrow('later');
    expect((await supervisor.stop('w-leaving')).state).toBe('tearing_down');
    expect(driver.calls.filter((c) => c.method === 'stop')).toHaveLength(1);
  });
});
