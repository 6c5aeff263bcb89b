import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { DeviceMapperVolumeManager, cowBytesFor } from './device-mapper-volume-manager';
import { FakeDmHost } from './testing/fake-dm-host';
import { ScriptedExecutor } from './testing/scripted-executor';

// The device-mapper manager against a scripted kernel (FakeDmHost): its
// argv, its bookkeeping, and above all the order it tears things down in.

const MiB = 1024 * 1024;

describe('DeviceMapperVolumeManager (scripted losetup/dmsetup)', () => {
  let root: string;
  let stateDir: string;
  let image: string;
  let host: FakeDmHost;
  let executor: ScriptedExecutor;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'corral-dm-'));
    stateDir = join(root, 'state');
    image = join(root, 'base.raw');
    // 64 MiB sparse raw base.
    writeFileSync(image, '');
    truncateSync(image, 64 * MiB);
    host = new FakeDmHost();
    executor = new ScriptedExecutor(host.respond, ['losetup', 'dmsetup']);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const manager = () => new DeviceMapperVolumeManager({ stateDir, executor, logger: silentLogger });
  const cowOf = (m: DeviceMapperVolumeManager, workloadId: string) => join(m.filesDir, `${workloadId}.cow`);

  it('clones: read-only origin loop, sparse COW on its own loop, snapshot target; raw /dev/mapper path', async () => {
    const volumes = manager();
    const baseId = await volumes.prepareBase(image);
    // Registering attaches nothing yet.
    expect(executor.calls).toEqual([]);
    const clone = await volumes.clone(baseId, 'w1');
    expect(clone).toEqual({ workloadId: 'w1', baseId, path: '/dev/mapper/corral-w1', format: 'raw', virtualBytes: 64 * MiB });

    const cow = cowOf(volumes, 'w1');
    expect(executor.lines()).toEqual([
      `losetup --find --show --read-only ${image}`,
      `losetup --find --show ${cow}`,
      `dmsetup create corral-w1 --uuid ${host.snapshots.get('corral-w1')?.uuid} --table 0 131072 snapshot /dev/loop0 /dev/loop1 P 8`,
    ]);
    expect(statSync(cow).size).toBe(cowBytesFor(64 * MiB));
    // Sparse: nothing written, (almost) nothing allocated.
    const usage = await volumes.usage('w1');
    expect(usage.apparentBytes).toBe(64 * MiB);
    expect(usage.allocatedBytes).toBeLessThan(MiB);
  });

  it('shares one origin between clones and keeps it until the last clone goes', async () => {
    const volumes = manager();
    const baseId = await volumes.prepareBase(image);
    await volumes.clone(baseId, 'w1');
    await volumes.clone(baseId, 'w2');
    expect(executor.lines((c) => c.args.includes('--read-only'))).toHaveLength(1);
    expect((await volumes.list()).bases).toEqual([expect.objectContaining({ baseId, refs: 2 })]);

    await volumes.remove('w1');
    expect(host.loops.has('/dev/loop0')).toBe(true);
    expect((await volumes.list()).bases[0].refs).toBe(1);
    await volumes.remove('w2');
    expect(host.loops.size).toBe(0);
    expect(host.snapshots.size).toBe(0);
    expect((await volumes.list()).bases).toEqual([]);
  });

  it('removes in order: dmsetup remove → losetup -d cow → delete cow file → release the origin', async () => {
    const volumes = manager();
    await volumes.cloneImage(image, 'w1');
    const cow = cowOf(volumes, 'w1');
    const timeline: string[] = [];
    host.onCall = (call) => {
      if (call.program === 'dmsetup' && call.args[0] === 'remove') timeline.push('dmsetup remove');
      if (call.program === 'losetup' && call.args[0] === '--detach') {
        const loop = host.loops.get(call.args[1]);
        timeline.push(loop?.backFile === cow ? 'losetup -d cow' : `losetup -d origin (cow file ${existsSync(cow) ? 'still there' : 'gone'})`);
      }
    };
    executor.calls.length = 0;
    await volumes.remove('w1');
    expect(timeline).toEqual(['dmsetup remove', 'losetup -d cow', 'losetup -d origin (cow file gone)']);
    expect(existsSync(cow)).toBe(false);
    expect(executor.lines((c) => c.args[0] !== '--list')).toEqual(['dmsetup remove --retry corral-w1', 'losetup --detach /dev/loop1', 'losetup --detach /dev/loop0']);
  });

  it('remove is idempotent, also when the devices vanished underneath', async () => {
    const volumes = manager();
    await volumes.cloneImage(image, 'w1');
    host.snapshots.clear();
    host.loops.delete('/dev/loop1');
    await volumes.remove('w1');
    await volumes.remove('w1');
    await volumes.remove('never-cloned');
    expect(host.loops.size).toBe(0);
    expect(await volumes.list()).toEqual({ kind: 'device-mapper', bases: [], clones: [] });
    expect(readdirSync(volumes.filesDir)).toEqual([]);
  });

  it('never detaches a loop device whose number now belongs to another file', async () => {
    const volumes = manager();
    await volumes.cloneImage(image, 'w1');
    // Someone detached our origin behind our back and reused its number.
    host.snapshots.clear();
    host.loops.delete('/dev/loop0');
    host.loops.set('/dev/loop0', { backFile: '/somebody/else.img', readOnly: true });
    await volumes.remove('w1');
    expect(host.loops.get('/dev/loop0')).toEqual({ backFile: '/somebody/else.img', readOnly: true });
  });

  it('rolls back a clone whose snapshot could not be created, leaving nothing behind', async () => {
    const volumes = manager();
    executor.failNext((c) => c.program === 'dmsetup' && c.args[0] === 'create', { exitCode: 1, stderr: 'device-mapper: reload ioctl failed: Invalid argument' });
    await expect(volumes.cloneImage(image, 'w1')).rejects.toThrow(/dmsetup|exited/);
    expect(host.loops.size).toBe(0);
    expect(host.snapshots.size).toBe(0);
    expect(readdirSync(volumes.filesDir)).toEqual([]);
    expect((await volumes.list()).clones).toEqual([]);
    // And it can be tried again.
    await volumes.cloneImage(image, 'w1');
    expect(host.snapshots.has('corral-w1')).toBe(true);
  });

  it('keeps a `removing` record when tear-down fails, and finishes it on retry', async () => {
    const volumes = manager();
    await volumes.cloneImage(image, 'w1');
    executor.failNext((c) => c.program === 'dmsetup' && c.args[0] === 'remove', { exitCode: 1, stderr: 'device-mapper: remove ioctl on corral-w1 failed: Device or resource busy' });
    await expect(volumes.remove('w1')).rejects.toThrow();
    expect((await volumes.list()).clones[0].state).toBe('removing');
    await volumes.remove('w1');
    expect(host.snapshots.size + host.loops.size).toBe(0);
  });

  it('refuses qcow2 bases: a snapshot needs raw blocks', async () => {
    const qcow = join(root, 'base.qcow2');
    writeFileSync(qcow, Buffer.concat([Buffer.from([0x51, 0x46, 0x49, 0xfb]), Buffer.alloc(1020)]));
    const volumes = manager();
    await expect(volumes.prepareBase(qcow)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(volumes.prepareBase(image, { format: 'qcow2' })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  describe('reconcile', () => {
    it('rolls back a clone cut short between its devices and its record, and removes devices no record owns', async () => {
      const first = manager();
      await first.cloneImage(image, 'w1');
      await first.cloneImage(image, 'w2');
      // A crash mid-creation of w3: the record says creating, the loop exists, no snapshot.
      executor.failNext((c) => c.program === 'dmsetup' && c.args[0] === 'create', { exitCode: 1, stderr: 'boom' });
      const crashing = manager();
      // Simulate the crash: the rollback itself never runs.
      (crashing as unknown as { rollBack: () => Promise<void> }).rollBack = async () => undefined;
      await expect(crashing.cloneImage(image, 'w3')).rejects.toThrow();
      // A Corral device and a loop for a COW file with no record (crash before the intent was written).
      writeFileSync(join(first.filesDir, 'ghost.cow'), '');
      host.loops.set('/dev/loop9', { backFile: join(first.filesDir, 'ghost.cow'), readOnly: false });
      host.snapshots.set('corral-ghost', { uuid: 'CORRAL-ghost', origin: '/dev/loop0', cow: '/dev/loop9', table: '' });
      // Somebody else's device is left alone.
      host.snapshots.set('vg0-root', { uuid: 'LVM-1', origin: '/dev/loop0', cow: '/dev/loop0', table: '' });

      const report = await manager().reconcile();
      expect(report.interrupted).toEqual(['w3']);
      expect(report.orphans).toEqual(expect.arrayContaining(['dm:corral-ghost', '/dev/loop9', join(first.filesDir, 'ghost.cow')]));
      expect([...host.snapshots.keys()].sort()).toEqual(['corral-w1', 'corral-w2', 'vg0-root']);
      expect(existsSync(cowOf(first, 'w3'))).toBe(false);
      expect((await manager().list()).clones.map((c) => c.workloadId).sort()).toEqual(['w1', 'w2']);
    });

    it('assembles clones again after a reboot from their persistent COW files', async () => {
      const volumes = manager();
      await volumes.cloneImage(image, 'w1');
      await volumes.cloneImage(image, 'w2');
      host.reboot();
      const report = await manager().reconcile();
      expect(report.revived.sort()).toEqual(['w1', 'w2']);
      expect([...host.snapshots.keys()].sort()).toEqual(['corral-w1', 'corral-w2']);
      // One origin for both again.
      expect([...host.loops.values()].filter((l) => l.readOnly)).toHaveLength(1);
    });

    it('drops records whose COW file vanished and releases the base', async () => {
      const volumes = manager();
      await volumes.cloneImage(image, 'w1');
      rmSync(cowOf(volumes, 'w1'));
      const report = await manager().reconcile();
      expect(report.recordsWithoutFiles).toEqual(['w1']);
      expect(report.releasedBases).toHaveLength(1);
      expect(host.loops.size + host.snapshots.size).toBe(0);
    });
  });
});
