import { closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, type Executor } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { DeviceMapperVolumeManager } from './device-mapper-volume-manager';
import { dmsetupInfo, losetupList } from './dm-commands';
import { DM_CONTROL_PATH, checkDeviceMapperControl, detectVolumeCapability } from './select-volume-manager';

// The device-mapper manager on a real kernel: needs a working
// /dev/mapper/control, dmsetup, losetup and root. Machines without
// device-mapper (like the development machines, DESIGN §4) skip it with the
// reason. Nothing here runs dmsetup before deciding: on such a kernel
// libdevmapper would mknod /dev/mapper/control as a side effect.

const MiB = 1024 * 1024;

function skipReason(): string | undefined {
  if (!existsSync(DM_CONTROL_PATH)) return `no ${DM_CONTROL_PATH}`;
  const noControl = checkDeviceMapperControl();
  if (noControl) return noControl;
  const capability = detectVolumeCapability();
  if (capability.kind !== 'device-mapper' || !capability.usable) return capability.reason;
  if (process.getuid?.() !== 0) return 'device-mapper needs root';
  return undefined;
}

const reason = skipReason();
const name = 'DeviceMapperVolumeManager on a real kernel';
if (reason) console.log(`[skip] ${name}: ${reason}`);

(reason ? describe.skip : describe)(name, () => {
  let root: string;
  let stateDir: string;
  let base: string;
  let executor: Executor;
  const manager = () => new DeviceMapperVolumeManager({ stateDir, executor, logger: silentLogger });

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'corral-dm-int-'));
    stateDir = join(root, 'state');
    base = join(root, 'base.raw');
    writeFileSync(base, '');
    truncateSync(base, 64 * MiB);
    executor = createExecutor({ allowedPrograms: ['losetup', 'dmsetup'], logger: silentLogger });
  });
  afterEach(async () => {
    await manager().reconcile().catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  });

  it('clones, writes through the snapshot without touching the base, and tears down completely', async () => {
    const volumes = manager();
    const clone = await volumes.cloneImage(base, 'dmint1');
    expect(existsSync(clone.path)).toBe(true);

    const fd = openSync(clone.path, 'r+');
    try {
      writeSync(fd, Buffer.alloc(MiB, 0xab), 0, MiB, 8 * MiB);
    } finally {
      closeSync(fd);
    }
    const check = Buffer.alloc(16);
    const baseFd = openSync(base, 'r');
    try {
      readSync(baseFd, check, 0, 16, 8 * MiB);
    } finally {
      closeSync(baseFd);
    }
    expect(check.every((b) => b === 0)).toBe(true);
    expect((await volumes.usage('dmint1')).allocatedBytes).toBeGreaterThanOrEqual(MiB);

    await volumes.remove('dmint1');
    await volumes.remove('dmint1');
    expect((await executor.run(dmsetupInfo())).some((d) => d.name === 'corral-dmint1')).toBe(false);
    const loops = await executor.run(losetupList());
    expect(loops.some((l) => l.backFile === base || l.backFile?.startsWith(volumes.filesDir))).toBe(false);
    expect(await volumes.list()).toEqual({ kind: 'device-mapper', bases: [], clones: [] });
  });
});
