import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { silentLogger } from '@corral/logging';
import type { SnapshotCapability, SnapshotProgress, SnapshotResult, TaskHandle, TaskSpec } from '../drivers/driver';
import { DriverRegistry } from '../drivers/driver-registry';
import { FakeDriver } from '../drivers/fake/fake-driver';
import { WorkloadSupervisor } from './workload-supervisor';
import type { WorkloadSpecInput } from './spec-validation';

// Snapshots and restores through the supervisor, over a fake driver that
// writes its "memory" to the snapshot file and starts tasks from it.

class SnapshottingFakeDriver extends FakeDriver implements SnapshotCapability {
  readonly restoredFrom: { file: string; workloadId: string; paused: boolean }[] = [];

  async snapshot(handle: TaskHandle, file: string, onProgress?: (p: SnapshotProgress) => void): Promise<SnapshotResult> {
    onProgress?.({ status: 'active', transferredBytes: 5, totalBytes: 10, remainingBytes: 5, elapsedMs: 1 });
    writeFileSync(file, `memory of ${handle.workloadId}`);
    onProgress?.({ status: 'completed', transferredBytes: 10, totalBytes: 10, remainingBytes: 0, elapsedMs: 2 });
    return { file, bytes: 10, durationMs: 2 };
  }

  async restoreFrom(file: string, spec: TaskSpec, options: { paused?: boolean } = {}): Promise<TaskHandle> {
    this.restoredFrom.push({ file, workloadId: spec.workloadId, paused: options.paused ?? false });
    return this.start(spec);
  }
}

const spec = (workloadId: string): WorkloadSpecInput => ({ workloadId, name: 'vm', driver: 'process', command: ['run'], env: {}, labels: {} });

describe('WorkloadSupervisor snapshots', () => {
  let stateDir: string;
  let driver: SnapshottingFakeDriver;
  let supervisor: WorkloadSupervisor;
  const published: string[] = [];

  beforeEach(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-snapshots-'));
    driver = new SnapshottingFakeDriver({ name: 'process' });
    const registry = new DriverRegistry(silentLogger);
    registry.register(driver);
    supervisor = new WorkloadSupervisor({ hostId: 'h', stateDir, drivers: registry, bus: { publish: (_t, key) => void published.push(key) }, logger: silentLogger });
    await supervisor.recover();
  });
  afterEach(async () => {
    await supervisor.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('snapshots a running workload into the state dir with progress, then restores a new workload from it', async () => {
    await supervisor.start(spec('src'));
    const progress: string[] = [];
    const result = await supervisor.snapshot('src', (p) => progress.push(p.status));
    expect(progress).toEqual(['active', 'completed']);
    expect(result.snapshotId).toMatch(/^snap-[0-9A-Za-z]+-[0-9a-f]+$/);
    expect(existsSync(result.file)).toBe(true);
    expect(dirname(result.file)).toBe(join(stateDir, 'snapshots', 'src'));

    const restored = await supervisor.restore(spec('copy'), { sourceWorkloadId: 'src', snapshotId: result.snapshotId });
    expect(restored).toMatchObject({ workloadId: 'copy', state: 'running' });
    expect(driver.restoredFrom).toEqual([{ file: result.file, workloadId: 'copy', paused: false }]);
    // Idempotent by id: the same restore again starts nothing new.
    await supervisor.restore(spec('copy'), { sourceWorkloadId: 'src', snapshotId: result.snapshotId });
    expect(driver.restoredFrom).toHaveLength(1);
  });

  it('leaves the workload paused when asked, and a restore can come up paused', async () => {
    await supervisor.start(spec('src'));
    const { snapshotId } = await supervisor.snapshot('src', () => undefined, { leavePaused: true });
    expect(supervisor.inspect('src').state).toBe('paused');
    const copy = await supervisor.restore(spec('paused-copy'), { sourceWorkloadId: 'src', snapshotId, paused: true });
    expect(copy.state).toBe('paused');
  });

  it('lists snapshots from disk (oldest first, real blocks), also after an agent restart, and deletes them idempotently', async () => {
    await supervisor.start(spec('src'));
    expect(await supervisor.listSnapshots('src')).toEqual([]);
    const first = await supervisor.snapshot('src', () => undefined);
    const second = await supervisor.snapshot('src', () => undefined);
    const listed = await supervisor.listSnapshots('src');
    expect(listed.map((s) => s.snapshotId).sort()).toEqual([first.snapshotId, second.snapshotId].sort());
    for (const s of listed) {
      expect(s).toMatchObject({ sourceWorkloadId: 'src', driver: 'process' });
      expect(s.createdAt).toBeInstanceOf(Date);
      // A 15-byte file still takes at least one block.
      expect(s.sizeBytes).toBeGreaterThan(0);
      expect(s.sizeBytes % 512).toBe(0);
    }

    // A new agent process reads the same list from disk.
    await supervisor.close();
    const registry = new DriverRegistry(silentLogger);
    registry.register(driver);
    supervisor = new WorkloadSupervisor({ hostId: 'h', stateDir, drivers: registry, bus: { publish: () => undefined }, logger: silentLogger });
    await supervisor.recover();
    expect((await supervisor.listSnapshots('src')).map((s) => s.snapshotId).sort()).toEqual(listed.map((s) => s.snapshotId).sort());

    expect(await supervisor.deleteSnapshot('src', first.snapshotId)).toBe(true);
    expect(existsSync(first.file)).toBe(false);
    expect(readdirSync(dirname(first.file)).filter((n) => n.startsWith(first.snapshotId))).toEqual([]);
    expect((await supervisor.listSnapshots('src')).map((s) => s.snapshotId)).toEqual([second.snapshotId]);
    // Idempotent: gone already is fine, and so is a workload without any.
    expect(await supervisor.deleteSnapshot('src', first.snapshotId)).toBe(false);
    expect(await supervisor.deleteSnapshot('never-here', first.snapshotId)).toBe(false);
    expect(await supervisor.listSnapshots('never-here')).toEqual([]);
    await expect(supervisor.restore(spec('late'), { sourceWorkloadId: 'src', snapshotId: first.snapshotId })).rejects.toMatchObject({ name: 'NotFoundError' });
    await expect(supervisor.deleteSnapshot('src', '../etc')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'snapshotId' });
    await expect(supervisor.listSnapshots('../src')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'workloadId' });
  });

  it('refuses to delete a snapshot while a restore reads it, and does not list one still being taken', async () => {
    await supervisor.start(spec('src'));
    const { snapshotId } = await supervisor.snapshot('src', () => undefined);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const restoreFrom = driver.restoreFrom.bind(driver);
    driver.restoreFrom = async (file, task, options) => {
      await gate;
      return restoreFrom(file, task, options);
    };
    const restoring = supervisor.restore(spec('copy'), { sourceWorkloadId: 'src', snapshotId });
    await new Promise((resolve) => setImmediate(resolve));
    await expect(supervisor.deleteSnapshot('src', snapshotId)).rejects.toMatchObject({ name: 'FailedPreconditionError', field: 'snapshotId' });
    release();
    await expect(restoring).resolves.toMatchObject({ workloadId: 'copy', state: 'running' });
    expect(await supervisor.deleteSnapshot('src', snapshotId)).toBe(true);

    let finish!: () => void;
    const slow = new Promise<void>((resolve) => (finish = resolve));
    const snapshot = driver.snapshot.bind(driver);
    driver.snapshot = async (handle, file, onProgress) => {
      const result = await snapshot(handle, file, onProgress);
      await slow;
      return result;
    };
    const taking = supervisor.snapshot('src', () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await supervisor.listSnapshots('src')).toEqual([]);
    finish();
    const taken = await taking;
    expect((await supervisor.listSnapshots('src')).map((s) => s.snapshotId)).toEqual([taken.snapshotId]);
  });

  it('refuses unknown and malformed snapshots before recording anything, and drivers that cannot snapshot', async () => {
    await supervisor.start(spec('src'));
    await expect(supervisor.restore(spec('x'), { sourceWorkloadId: 'src', snapshotId: 'snap-20000101T000000-00' })).rejects.toMatchObject({ name: 'NotFoundError', field: 'snapshotId' });
    await expect(supervisor.restore(spec('x'), { sourceWorkloadId: 'src', snapshotId: '../../etc' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'snapshotId' });
    await expect(supervisor.restore(spec('x'), { sourceWorkloadId: '../src', snapshotId: 'snap-1-ab' })).rejects.toMatchObject({ field: 'sourceWorkloadId' });
    expect(() => supervisor.inspect('x')).toThrow(expect.objectContaining({ name: 'NotFoundError' }));

    const plain = new FakeDriver({ name: 'podman' });
    const registry = new DriverRegistry(silentLogger);
    registry.register(plain);
    const other = new WorkloadSupervisor({ hostId: 'h', stateDir: join(stateDir, 'other'), drivers: registry, bus: { publish: () => undefined }, logger: silentLogger });
    await other.recover();
    await other.start({ ...spec('p'), driver: 'podman', image: 'localhost/x:y' });
    await expect(other.snapshot('p', () => undefined)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
    await other.close();
  });
});
