import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '@corral/logging';
import { hasLabelledRuntimes } from '../driver';
import { isQemuArgvOfTask, QemuDriver } from './qemu-driver';

// Finding orphaned VMs by their task directories without qemu: what is not
// a live qemu of that task (no pidfile, a dead pid, a pid reused by another
// program) is never listed or killed. The real-qemu side is in
// qemu-orphans.int.spec.ts.
describe('qemu driver labelled runtimes (no qemu needed)', () => {
  let stateDir: string;
  let driver: QemuDriver;

  beforeEach(() => {
    stateDir = mkdtempSync('/tmp/cql-');
    driver = new QemuDriver({ accelerator: 'tcg', stateDir, defaultMemoryMb: 64, defaultVcpus: 1, logger: silentLogger });
  });
  afterEach(() => rmSync(stateDir, { recursive: true, force: true }));

  const taskDir = (workloadId: string, pid?: number) => {
    const dir = join(stateDir, workloadId);
    mkdirSync(dir);
    if (pid !== undefined) writeFileSync(join(dir, 'qemu.pid'), `${pid}\n`);
    return dir;
  };

  it('opts in to ListUnmanagedRuntimes / DestroyUnmanagedRuntime', () => {
    expect(hasLabelledRuntimes(driver)).toBe(true);
  });

  it('lists nothing for an absent state dir, a dir without pidfile, a dead pid, or a live process that is not that task\'s qemu', async () => {
    rmSync(stateDir, { recursive: true, force: true });
    expect(await driver.listLabelled()).toEqual([]);
    mkdirSync(stateDir);
    taskDir('no-pidfile');
    taskDir('dead-pid', 2 ** 22 + 12345);
    // This very jest process: alive, but its command line is not a qemu of that task.
    taskDir('reused-pid', process.pid);
    writeFileSync(join(stateDir, 'not-a-dir'), 'x');
    expect(await driver.listLabelled()).toEqual([]);
  });

  it('removes a leftover directory without signalling a process that is not its qemu, idempotently', async () => {
    const dir = taskDir('reused-pid', process.pid);
    await driver.removeLabelled('reused-pid');
    await driver.removeLabelled('reused-pid');
    expect(() => mkdirSync(dir)).not.toThrow(); // it was gone
    await expect(driver.removeLabelled('../etc')).rejects.toMatchObject({ field: 'workloadId' });
  });

  it('tells the qemu of a task by its -name and -pidfile', () => {
    const pidFile = '/tmp/cq-x/w1/qemu.pid';
    expect(isQemuArgvOfTask(['qemu-system-x86_64', '-name', 'w1', '-pidfile', pidFile], 'w1', pidFile)).toBe(true);
    expect(isQemuArgvOfTask(['qemu-system-x86_64', '-name', 'w2', '-pidfile', pidFile], 'w1', pidFile)).toBe(false);
    expect(isQemuArgvOfTask(['qemu-system-x86_64', '-name', 'w1', '-pidfile', '/tmp/other/w1/qemu.pid'], 'w1', pidFile)).toBe(false);
    expect(isQemuArgvOfTask(['node', 'jest', 'w1', pidFile], 'w1', pidFile)).toBe(false);
  });
});
