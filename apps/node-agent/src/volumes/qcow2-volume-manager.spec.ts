import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { Qcow2VolumeManager } from './qcow2-volume-manager';
import { ScriptedExecutor, type ScriptedCall, type ScriptedOutput } from './testing/scripted-executor';

// The qcow2 manager's bookkeeping with a scripted qemu-img (the real one is
// exercised in qcow2-volume-manager.int.spec.ts): idempotency, refcounts,
// intents and what reconcile makes of every crash point.

const MiB = 1024 * 1024;

/** qemu-img as far as the manager uses it: info of raw files, create writes a small overlay. */
function fakeQemuImg(call: ScriptedCall): ScriptedOutput {
  const path = call.args[call.args.length - 1];
  if (call.args[0] === 'info') {
    if (!existsSync(path)) return { exitCode: 1, stderr: `qemu-img: Could not open '${path}': No such file or directory` };
    const overlay = readFileSync(path, 'utf8').startsWith('QFI');
    const backing = overlay ? readFileSync(path, 'utf8').split('\n')[1] : undefined;
    return { stdout: JSON.stringify({ format: overlay ? 'qcow2' : 'raw', 'virtual-size': overlay ? 64 * MiB : readFileSync(path).length || 64 * MiB, ...(backing ? { 'backing-filename': backing } : {}) }) };
  }
  if (call.args[0] === 'create') {
    const base = call.args[call.args.indexOf('-b') + 1];
    if (!existsSync(base)) return { exitCode: 1, stderr: `qemu-img: ${path}: Could not open '${base}': No such file or directory` };
    writeFileSync(path, `QFI\n${base}\n`);
    return {};
  }
  if (call.args[0] === 'rebase') {
    writeFileSync(path, 'QFI\n');
    return {};
  }
  return { exitCode: 1, stderr: 'unexpected' };
}

describe('Qcow2VolumeManager (scripted qemu-img)', () => {
  let root: string;
  let stateDir: string;
  let image: string;
  let executor: ScriptedExecutor;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'corral-qcow2-'));
    stateDir = join(root, 'state');
    image = join(root, 'base.raw');
    writeFileSync(image, '');
    executor = new ScriptedExecutor(fakeQemuImg, ['qemu-img']);
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const manager = () => new Qcow2VolumeManager({ stateDir, executor, logger: silentLogger });
  const stateFile = () => JSON.parse(readFileSync(join(stateDir, 'volumes', 'qcow2', 'state.json'), 'utf8'));

  it('registers a base once per unchanged file, also across restarts', async () => {
    const a = await manager().prepareBase(image);
    const b = await manager().prepareBase(join(root, '.', 'base.raw'));
    expect(b).toBe(a);
    expect(executor.lines((c) => c.args[0] === 'info')).toHaveLength(1);
    expect(a).toMatch(/^base-[0-9a-f]{20}$/);
  });

  it('clones with qemu-img create -b BASE -F FMT into the state dir', async () => {
    const volumes = manager();
    const baseId = await volumes.prepareBase(image);
    const clone = await volumes.clone(baseId, 'w1');
    expect(clone).toEqual({ workloadId: 'w1', baseId, path: join(stateDir, 'volumes', 'qcow2', 'clones', 'w1.qcow2'), format: 'qcow2', virtualBytes: 64 * MiB });
    expect(executor.lines((c) => c.args[0] === 'create')).toEqual([`qemu-img create -q -f qcow2 -b ${image} -F raw ${clone.path}`]);
  });

  it('is idempotent per workload and refuses a second base for the same workload', async () => {
    const volumes = manager();
    const baseId = await volumes.prepareBase(image);
    const first = await volumes.clone(baseId, 'w1');
    expect(await volumes.clone(baseId, 'w1')).toEqual(first);
    expect(executor.lines((c) => c.args[0] === 'create')).toHaveLength(1);
    const other = join(root, 'other.raw');
    writeFileSync(other, 'x');
    await expect(volumes.cloneImage(other, 'w1')).rejects.toBeInstanceOf(FailedPreconditionError);
  });

  it('counts references by clones and releases a base with its last clone', async () => {
    const volumes = manager();
    const baseId = await volumes.prepareBase(image);
    await volumes.clone(baseId, 'w1');
    await volumes.clone(baseId, 'w2');
    await expect(volumes.releaseBase(baseId)).rejects.toBeInstanceOf(FailedPreconditionError);
    await volumes.remove('w1');
    expect((await volumes.list()).bases[0].refs).toBe(1);
    await volumes.remove('w2');
    expect((await volumes.list()).bases).toEqual([]);
    await expect(volumes.clone(baseId, 'w3')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('releaseBase frees a prepared base nobody cloned, and is idempotent', async () => {
    const volumes = manager();
    const baseId = await volumes.prepareBase(image);
    await volumes.releaseBase(baseId);
    await volumes.releaseBase(baseId);
    expect((await volumes.list()).bases).toEqual([]);
  });

  it('refuses to clone a base whose file changed since it was registered', async () => {
    const volumes = manager();
    const baseId = await volumes.prepareBase(image);
    utimesSync(image, new Date(), new Date(Date.now() + 5000));
    await expect(volumes.clone(baseId, 'w1')).rejects.toBeInstanceOf(FailedPreconditionError);
  });

  it('validates inputs', async () => {
    const volumes = manager();
    await expect(volumes.prepareBase(join(root, 'missing.raw'))).rejects.toMatchObject({ name: 'NotFoundError', field: 'imagePath' });
    await expect(volumes.prepareBase(root)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(volumes.cloneImage(image, '../../etc/passwd')).rejects.toMatchObject({ field: 'workloadId' });
    await expect(volumes.clone('base-nope', 'w1')).rejects.toMatchObject({ name: 'NotFoundError', field: 'baseId' });
    await expect(volumes.usage('w1')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('writes the intent before the file exists and rolls back a failed create', async () => {
    const volumes = manager();
    const baseId = await volumes.prepareBase(image);
    let recorded: unknown;
    executor.failNext(
      (c) => {
        if (c.args[0] !== 'create') return false;
        recorded = stateFile().clones.w1?.state;
        return true;
      },
      { exitCode: 1, stderr: 'qemu-img: disk full' },
    );
    await expect(volumes.clone(baseId, 'w1')).rejects.toThrow();
    expect(recorded).toBe('creating');
    expect(stateFile().clones).toEqual({});
    expect(readdirSync(volumes.filesDir)).toEqual([]);
  });

  it('flattens: the clone stops holding its base', async () => {
    const volumes = manager();
    const clone = await volumes.cloneImage(image, 'w1');
    const flat = await volumes.flatten('w1');
    expect(flat).toEqual({ ...clone, baseId: undefined });
    expect(executor.lines((c) => c.args[0] === 'rebase')).toEqual([`qemu-img rebase -q -f qcow2 -b  ${clone.path}`]);
    expect((await volumes.list()).bases).toEqual([]);
    expect(await volumes.flatten('w1')).toEqual(flat);
  });

  describe('reconcile', () => {
    it('deletes clone files without a record, drops records without files, finishes interrupted work', async () => {
      const volumes = manager();
      const baseId = await volumes.prepareBase(image);
      await volumes.clone(baseId, 'keep');
      await volumes.clone(baseId, 'lost');
      await volumes.clone(baseId, 'half-removed');
      rmSync(join(volumes.filesDir, 'lost.qcow2'));
      writeFileSync(join(volumes.filesDir, 'stray.qcow2'), 'QFI\n');
      // Crash points, written as the manager would have left them.
      const state = stateFile();
      state.clones['half-removed'].state = 'removing';
      state.clones['half-created'] = { ...state.clones.keep, workloadId: 'half-created', state: 'creating', path: join(volumes.filesDir, 'half-created.qcow2'), files: [join(volumes.filesDir, 'half-created.qcow2')] };
      writeFileSync(join(volumes.filesDir, 'half-created.qcow2'), 'QFI\n');
      writeFileSync(join(stateDir, 'volumes', 'qcow2', 'state.json'), JSON.stringify(state));
      writeFileSync(join(stateDir, 'volumes', 'qcow2', '.state.json.1.abcd.tmp'), '{');

      const restarted = manager();
      const report = await restarted.reconcile();
      expect(report.interrupted.sort()).toEqual(['half-created', 'half-removed']);
      expect(report.recordsWithoutFiles).toEqual(['lost']);
      expect(report.orphans).toEqual([join(volumes.filesDir, 'stray.qcow2')]);
      expect(report.releasedBases).toEqual([]);
      expect(readdirSync(volumes.filesDir)).toEqual(['keep.qcow2']);
      expect((await restarted.list()).clones.map((c) => c.workloadId)).toEqual(['keep']);
      expect((await restarted.list()).bases[0].refs).toBe(1);
      expect(readdirSync(join(stateDir, 'volumes', 'qcow2')).sort()).toEqual(['clones', 'state.json']);
    });

    it('releases bases no clone uses', async () => {
      const volumes = manager();
      const baseId = await volumes.prepareBase(image);
      expect((await manager().reconcile()).releasedBases).toEqual([baseId]);
    });

    it('settles an interrupted flatten by what the overlay says', async () => {
      const volumes = manager();
      const clone = await volumes.cloneImage(image, 'done');
      await volumes.cloneImage(image, 'not-done');
      writeFileSync(clone.path, 'QFI\n'); // rebase finished, record not updated
      const state = stateFile();
      state.clones.done.state = 'flattening';
      state.clones['not-done'].state = 'flattening';
      writeFileSync(join(stateDir, 'volumes', 'qcow2', 'state.json'), JSON.stringify(state));
      const restarted = manager();
      await restarted.reconcile();
      const clones = Object.fromEntries((await restarted.list()).clones.map((c) => [c.workloadId, c]));
      expect(clones.done).toMatchObject({ state: 'ready', baseId: undefined });
      expect(clones['not-done']).toMatchObject({ state: 'ready', baseId: clone.baseId });
    });

    it('refuses state of another kind', async () => {
      await manager().prepareBase(image);
      const state = stateFile();
      writeFileSync(join(stateDir, 'volumes', 'qcow2', 'state.json'), JSON.stringify({ ...state, kind: 'device-mapper' }));
      await expect(manager().reconcile()).rejects.toThrow(/volume state/);
    });
  });
});
