import { mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Topic } from '@corral/events';
import { createExecutor, execErrorFromResult, isProcessAlive, type Command } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import type { WorkloadStateChanged } from '@corral/proto';
import { describeWithPodman, ensureBusyboxImage, eventually } from '@corral/testing';
import { DriverRegistry } from '../drivers/driver-registry';
import { containerName } from '../drivers/podman/commands';
import { PodmanDriver } from '../drivers/podman/podman-driver';
import { ProcessDriver } from '../drivers/process/process-driver';
import { PortAllocator } from '../ports';
import { WorkloadSupervisor, type StateEventPublisher } from './workload-supervisor';

// What the reconciler relies on, with real runtimes: runtime objects that
// carry a Corral workload id but have no agent record are listed (and only
// those), and removed by id; an ended workload is relaunched under the same
// id with its seq continuing.

class RecordingBus implements StateEventPublisher {
  readonly seqs = new Map<string, number[]>();
  publish<T>(_topic: Topic<T>, key: string, message: T): void {
    const list = this.seqs.get(key) ?? [];
    list.push((message as unknown as WorkloadStateChanged).seq);
    this.seqs.set(key, list);
  }
}

describe('unmanaged runtimes and restarts with the process driver', () => {
  let stateDir: string;
  let supervisor: WorkloadSupervisor;
  const bus = new RecordingBus();
  const spec = (workloadId: string, command = ['/bin/sleep', '300']) => ({ workloadId, name: workloadId, driver: 'process', command, env: {}, labels: {} });

  beforeEach(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-unmanaged-'));
    const drivers = new DriverRegistry(silentLogger);
    drivers.register(new ProcessDriver({ rootDir: join(stateDir, 'process'), logger: silentLogger, adoptedPollMs: 100 }));
    supervisor = new WorkloadSupervisor({ hostId: 'h', stateDir, drivers, bus, logger: silentLogger, ports: new PortAllocator({ stateDir, logger: silentLogger, range: { start: 43300, end: 43399 } }) });
    await supervisor.recover();
  });

  afterEach(async () => {
    for (const w of supervisor.list()) await supervisor.destroy(w.workloadId, { force: true, timeoutMs: 1000 }).catch(() => undefined);
    for (const r of await supervisor.listUnmanaged()) await supervisor.destroyUnmanaged(r.workloadId).catch(() => undefined);
    await supervisor.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('lists a process whose record is gone (and not the managed ones), then kills it and removes its directory', async () => {
    await supervisor.start(spec('kept'));
    const lost = await supervisor.start(spec('lost'));
    const pid = Number(lost.handle);
    // The agent loses its record behind everyone's back (a fresh agent would not know it either).
    unlinkSync(join(stateDir, 'workloads', 'lost.json'));
    await supervisor.close();
    const drivers = new DriverRegistry(silentLogger);
    drivers.register(new ProcessDriver({ rootDir: join(stateDir, 'process'), logger: silentLogger }));
    supervisor = new WorkloadSupervisor({ hostId: 'h', stateDir, drivers, bus, logger: silentLogger, ports: new PortAllocator({ stateDir, logger: silentLogger, range: { start: 43300, end: 43399 } }) });
    await supervisor.recover();

    const found = await supervisor.listUnmanaged();
    expect(found).toEqual([expect.objectContaining({ workloadId: 'lost', driver: 'process', running: true, displayId: String(pid) })]);
    expect(found[0].createdAt.getTime()).toBeLessThanOrEqual(Date.now());
    // A known workload is left to destroy().
    expect(await supervisor.destroyUnmanaged('kept')).toBe(false);
    expect(await supervisor.destroyUnmanaged('lost')).toBe(true);
    expect(isProcessAlive(pid)).toBe(false);
    expect(await supervisor.listUnmanaged()).toEqual([]);
    expect(await supervisor.destroyUnmanaged('lost')).toBe(false);
  });

  it('restarts an ended workload under the same id with its seq continuing; a running one is left alone', async () => {
    const first = await supervisor.start(spec('crashy', ['/bin/sh', '-c', 'exit 3']));
    await eventually(() => (supervisor.inspect('crashy').state === 'failed' ? true : undefined), { what: 'the first run to fail' });
    const failed = supervisor.inspect('crashy');
    expect(failed.exitCode).toBe(3);
    const again = await supervisor.restart('crashy');
    expect(again.seq).toBeGreaterThan(failed.seq);
    expect(again.handle).not.toBe(first.handle);
    await eventually(() => (supervisor.inspect('crashy').state === 'failed' && supervisor.inspect('crashy').seq > again.seq ? true : undefined), { what: 'the second run to fail' });
    const seqs = bus.seqs.get('crashy') ?? [];
    expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);

    const running = await supervisor.start(spec('steady'));
    expect((await supervisor.restart('steady')).seq).toBe(supervisor.inspect('steady').seq);
    expect(supervisor.inspect('steady').handle).toBe(running.handle);
    await expect(supervisor.restart('nobody')).rejects.toMatchObject({ name: 'NotFoundError' });
  });
});

describeWithPodman('unmanaged runtimes with real podman', () => {
  jest.setTimeout(120_000);
  const ghost = `um${process.pid.toString(36)}${Date.now().toString(36)}-ghost`;
  const podman = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
  const raw = (args: string[]): Command<string> => ({ program: 'podman', args, timeoutMs: 60_000, parse: (out) => out, mapError: (r) => execErrorFromResult(r) });
  let stateDir: string;
  const drivers: PodmanDriver[] = [];
  const supervisors: WorkloadSupervisor[] = [];
  const supervisorOver = async () => {
    const driver = new PodmanDriver({ logger: silentLogger, exitPollMs: 200 });
    const registry = new DriverRegistry(silentLogger);
    registry.register(driver);
    const supervisor = new WorkloadSupervisor({ hostId: 'h', stateDir, drivers: registry, bus: new RecordingBus(), logger: silentLogger });
    await supervisor.recover();
    drivers.push(driver);
    supervisors.push(supervisor);
    return supervisor;
  };

  beforeAll(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-unmanaged-podman-'));
  });

  afterAll(async () => {
    for (const s of supervisors) await s.close();
    for (const d of drivers) await d.close();
    await podman.run(raw(['rm', '--force', '--time', '0', '--', containerName(ghost)])).catch(() => undefined);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('lists a container labelled with a workload id the agent does not know, and removes it', async () => {
    const image = await ensureBusyboxImage();
    const first = await supervisorOver();
    await first.start({ workloadId: ghost, name: ghost, driver: 'podman', image, command: ['sleep', '300'], env: {}, labels: {} });
    // The agent loses the record; the container stays, labelled.
    unlinkSync(join(stateDir, 'workloads', `${ghost}.json`));
    await first.close();
    const supervisor = await supervisorOver();
    const found = (await supervisor.listUnmanaged()).filter((r) => r.workloadId === ghost);
    expect(found).toEqual([expect.objectContaining({ workloadId: ghost, driver: 'podman', running: true })]);
    expect(await supervisor.destroyUnmanaged(ghost)).toBe(true);
    expect((await supervisor.listUnmanaged()).filter((r) => r.workloadId === ghost)).toEqual([]);
  });
});
