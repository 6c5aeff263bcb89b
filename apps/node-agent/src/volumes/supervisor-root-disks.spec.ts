import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { DriverRegistry } from '../drivers/driver-registry';
import { FakeDriver, FakeMachine } from '../drivers/fake/fake-driver';
import type { WorkloadSpecInput } from '../workloads/spec-validation';
import { WorkloadSupervisor } from '../workloads/workload-supervisor';
import type { VolumeClone } from './volume-manager';

// The supervisor's side of root disks, over a fake driver and a recording
// volume manager: the clone is made (and recorded) before the driver starts
// the VM and handed to it as its disk; no manager, or a manager that
// refuses, fails the start with the reason; teardown removes the clone. A
// unikernel's image is cloned the same way.

class RecordingVolumes {
  readonly calls: string[] = [];
  refuse: Error | undefined;
  async cloneImage(imagePath: string, workloadId: string): Promise<VolumeClone> {
    this.calls.push(`clone ${imagePath} ${workloadId}`);
    if (this.refuse) throw this.refuse;
    return { workloadId, baseId: 'b-1', path: `/volumes/${workloadId}.qcow2`, format: 'qcow2', virtualBytes: 1 << 24 };
  }
  async remove(workloadId: string): Promise<void> {
    this.calls.push(`remove ${workloadId}`);
  }
}

const vmSpec = (workloadId: string, rootDisk?: string): WorkloadSpecInput => ({
  workloadId,
  name: 'vm',
  driver: 'qemu',
  command: [],
  env: {},
  labels: {},
  vm: { mode: 'microvm', kernel: '/boot/vmlinuz', ...(rootDisk ? { rootDisk } : {}) },
});

describe('WorkloadSupervisor root disks', () => {
  let stateDir: string;
  let driver: FakeDriver;
  let volumes: RecordingVolumes;
  const supervisors: WorkloadSupervisor[] = [];

  const newSupervisor = async (withVolumes = true, dir = stateDir) => {
    const registry = new DriverRegistry(silentLogger);
    registry.register(driver);
    const s = new WorkloadSupervisor({ hostId: 'h', stateDir: dir, drivers: registry, bus: { publish: () => undefined }, logger: silentLogger, ...(withVolumes ? { volumes } : {}) });
    await s.recover();
    supervisors.push(s);
    return s;
  };

  beforeEach(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-root-disks-'));
    driver = new FakeDriver({ name: 'qemu', machine: new FakeMachine() });
    volumes = new RecordingVolumes();
  });
  afterEach(async () => {
    for (const s of supervisors.splice(0)) await s.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('clones the base before the driver starts the VM, hands the clone over as its disk, records it, and removes it at teardown', async () => {
    const supervisor = await newSupervisor();
    const view = await supervisor.start(vmSpec('vm-1', '/images/base.qcow2'));
    expect(view.state).toBe('running');
    expect(volumes.calls).toEqual(['clone /images/base.qcow2 vm-1']);
    expect(driver.machine.specOf('vm-1')?.vm).toMatchObject({ mode: 'microvm', kernel: '/boot/vmlinuz', disk: '/volumes/vm-1.qcow2' });
    const record = JSON.parse(readFileSync(join(stateDir, 'workloads', 'vm-1.json'), 'utf8')) as { volume?: unknown };
    expect(record.volume).toEqual({ path: '/volumes/vm-1.qcow2', format: 'qcow2', baseImage: '/images/base.qcow2' });

    await supervisor.destroy('vm-1', { force: true, timeoutMs: 100 });
    expect(volumes.calls).toEqual(['clone /images/base.qcow2 vm-1', 'remove vm-1']);
  });

  it('clones a unikernel\'s image the same way (the driver boots the clone, never the image), and a restarted agent still removes it at teardown', async () => {
    const supervisor = await newSupervisor();
    const unikernel: WorkloadSpecInput = { workloadId: 'uk-1', name: 'uk', driver: 'qemu', command: [], env: {}, labels: {}, image: '/images/app.img', vm: { mode: 'unikernel' } };
    expect((await supervisor.start(unikernel)).state).toBe('running');
    expect(volumes.calls).toEqual(['clone /images/app.img uk-1']);
    expect(driver.machine.specOf('uk-1')).toMatchObject({ image: '/images/app.img', vm: { mode: 'unikernel', disk: '/volumes/uk-1.qcow2' } });
    const record = JSON.parse(readFileSync(join(stateDir, 'workloads', 'uk-1.json'), 'utf8')) as { volume?: unknown };
    expect(record.volume).toEqual({ path: '/volumes/uk-1.qcow2', format: 'qcow2', baseImage: '/images/app.img' });

    // The agent restarts: the VM is re-adopted from its record, and its teardown still removes the clone.
    await supervisor.close();
    const restarted = await newSupervisor();
    expect(restarted.inspect('uk-1')).toMatchObject({ state: 'running' });
    await restarted.destroy('uk-1', { force: true, timeoutMs: 100 });
    expect(volumes.calls).toEqual(['clone /images/app.img uk-1', 'remove uk-1']);
  });

  it('starts a VM without rootDisk with no clone, and fails a start whose clone is refused or impossible, naming why', async () => {
    const supervisor = await newSupervisor();
    await supervisor.start(vmSpec('plain'));
    expect(volumes.calls).toEqual([]);
    expect(driver.machine.specOf('plain')?.vm?.disk).toBeUndefined();

    volumes.refuse = new InvalidArgumentError('unsupported disk format "vmdk": use raw or qcow2', { field: 'imagePath' });
    const refused = await supervisor.start(vmSpec('bad-base', '/images/base.vmdk'));
    expect(refused).toMatchObject({ state: 'failed', reason: 'start failed: unsupported disk format "vmdk": use raw or qcow2' });
    expect(driver.machine.specOf('bad-base')).toBeUndefined();

    const without = await newSupervisor(false, join(stateDir, 'other'));
    const none = await without.start(vmSpec('no-manager', '/images/base.qcow2'));
    expect(none).toMatchObject({ state: 'failed', reason: expect.stringMatching(/no volume manager/) });
  });
});
