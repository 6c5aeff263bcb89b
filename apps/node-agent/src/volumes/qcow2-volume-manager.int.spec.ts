import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, execErrorFromResult, resolveProgram, type Command, type Executor } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { describeIfAvailable } from '@corral/testing';
import { Qcow2VolumeManager } from './qcow2-volume-manager';
import { qemuImgInfo } from './qemu-img';

// The qcow2 manager with the real qemu-img: overlays on a 100 MiB sparse raw
// base, what they report, and that nothing is left behind.

const MiB = 1024 * 1024;
const qemuImg = resolveProgram('qemu-img', process.env.PATH);
const qemuIo = resolveProgram('qemu-io', process.env.PATH);

function describeWithQemuImg(name: string, fn: () => void): void {
  describeIfAvailable(name, qemuImg ? undefined : 'qemu-img is not installed (Debian package qemu-utils)', fn);
}

/** `qemu-io -f qcow2 -c "write -P 0xab OFFSET LENGTH" FILE`: guest-style writes into an image, for tests. */
const qemuIoWrite = (path: string, offset: number, length: number): Command<void> => ({
  program: 'qemu-io',
  args: ['-f', 'qcow2', '-c', `write -P 0xab ${offset} ${length}`, path],
  parse: () => undefined,
  mapError: execErrorFromResult,
});

describeWithQemuImg('Qcow2VolumeManager with real qemu-img', () => {
  let root: string;
  let stateDir: string;
  let base: string;
  let executor: Executor;
  const manager = () => new Qcow2VolumeManager({ stateDir, executor, logger: silentLogger });

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'corral-qcow2-int-'));
    stateDir = join(root, 'state');
    base = join(root, 'base.raw');
    writeFileSync(base, '');
    truncateSync(base, 100 * MiB); // sparse: no blocks
    executor = createExecutor({ allowedPrograms: ['qemu-img', 'qemu-io'], logger: silentLogger });
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('clones a 100 MiB sparse raw base into an overlay that reads through to it, and removes it without a trace', async () => {
    const volumes = manager();
    const baseId = await volumes.prepareBase(base);
    expect((await volumes.list()).bases).toEqual([{ baseId, imagePath: base, format: 'raw', virtualBytes: 100 * MiB, refs: 0 }]);

    const clone = await volumes.clone(baseId, 'w1');
    expect(clone.format).toBe('qcow2');
    const info = await executor.run(qemuImgInfo(clone.path));
    expect(info).toMatchObject({ format: 'qcow2', virtualBytes: 100 * MiB, backingFile: base, backingFormat: 'raw' });

    const usage = await volumes.usage('w1');
    expect(usage.apparentBytes).toBe(100 * MiB);
    expect(usage.allocatedBytes).toBeGreaterThan(0);
    expect(usage.allocatedBytes).toBeLessThan(MiB);
    expect(usage.allocatedBytes * 100).toBeLessThan(usage.apparentBytes);

    await volumes.remove('w1');
    await volumes.remove('w1');
    expect(existsSync(clone.path)).toBe(false);
    expect(readdirSync(volumes.filesDir)).toEqual([]);
    expect(await volumes.list()).toEqual({ kind: 'qcow2', bases: [], clones: [] });
    // The base was never written.
    expect(statSync(base).size).toBe(100 * MiB);
    expect(statSync(base).blocks).toBe(0);
  });

  (qemuIo ? it : it.skip)('writes land in the clone, not the base; flatten makes it stand alone', async () => {
    const volumes = manager();
    const clone = await volumes.cloneImage(base, 'w1');
    const before = (await volumes.usage('w1')).allocatedBytes;
    await executor.run(qemuIoWrite(clone.path, 4 * MiB, 2 * MiB));
    const after = (await volumes.usage('w1')).allocatedBytes;
    expect(after - before).toBeGreaterThanOrEqual(2 * MiB);
    expect(statSync(base).blocks).toBe(0);

    const flat = await volumes.flatten('w1');
    expect(flat.baseId).toBeUndefined();
    expect((await executor.run(qemuImgInfo(clone.path))).backingFile).toBeUndefined();
    expect((await volumes.list()).bases).toEqual([]);
    await volumes.remove('w1');
    expect(readdirSync(volumes.filesDir)).toEqual([]);
  });

  it('clones a qcow2 base with -F qcow2', async () => {
    const volumes = manager();
    const first = await volumes.cloneImage(base, 'golden');
    const second = await volumes.cloneImage(first.path, 'w2');
    const info = await executor.run(qemuImgInfo(second.path));
    expect(info).toMatchObject({ backingFile: first.path, backingFormat: 'qcow2', virtualBytes: 100 * MiB });
    await volumes.remove('w2');
    await volumes.remove('golden');
    expect(readdirSync(volumes.filesDir)).toEqual([]);
  });

  it('serves concurrent clones of one base, and reconcile after a restart keeps them', async () => {
    const volumes = manager();
    const clones = await Promise.all(Array.from({ length: 8 }, (_, i) => volumes.cloneImage(base, `w${i}`)));
    expect(new Set(clones.map((c) => c.baseId)).size).toBe(1);
    expect((await volumes.list()).bases[0].refs).toBe(8);
    writeFileSync(join(volumes.filesDir, 'leaked.qcow2'), 'x');

    const restarted = manager();
    const report = await restarted.reconcile();
    expect(report).toEqual({ interrupted: [], recordsWithoutFiles: [], orphans: [join(volumes.filesDir, 'leaked.qcow2')], releasedBases: [], revived: [] });
    await Promise.all(clones.map((c) => restarted.remove(c.workloadId)));
    expect(readdirSync(volumes.filesDir)).toEqual([]);
    expect((await restarted.list()).bases).toEqual([]);
  });

  it('reports a missing base image as NotFound', async () => {
    await expect(manager().prepareBase(join(root, 'nope.raw'))).rejects.toMatchObject({ name: 'NotFoundError' });
  });
});
