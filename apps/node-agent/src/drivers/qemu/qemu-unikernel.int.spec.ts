import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isProcessAlive, killProcessGroup, resolveProgram } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { eventually, qemuProcessesUnder, UNIKERNEL_READY_MARKER, writeUnikernelImage } from '@corral/testing';
import type { TaskHandle, TaskSpec } from '../driver';
import { QemuDriver } from './qemu-driver';

// The qemu driver's second mode with real qemu under tcg: a unikernel is a
// bootable image the firmware boots from the VM's first disk (no -kernel).
// The test image (libs/testing unikernel-image.ts) is one boot sector that
// prints a marker on the serial console and halts. The driver boots it from
// an overlay of its own (the image is never written), captures and follows
// the console, pauses and resumes it through QMP, stops it although it
// ignores the ACPI powerdown (quit after the timeout), and destroy leaves
// no qemu and no task directory behind.

const qemuPath = resolveProgram('qemu-system-x86_64', process.env.PATH);
const qemuImgPath = resolveProgram('qemu-img', process.env.PATH);
const skipReason = !qemuPath ? 'qemu-system-x86_64 is not installed (Debian: qemu-system-x86)' : !qemuImgPath ? 'qemu-img is not installed (Debian: qemu-utils)' : undefined;
if (skipReason) console.log(`[skip] qemu unikernel mode: ${skipReason}`);
const describeWithQemu = skipReason ? describe.skip : describe;

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describeWithQemu('qemu driver, unikernel mode (real qemu, tcg)', () => {
  jest.setTimeout(120_000);
  let stateDir: string;
  let imagePath: string;
  let driver: QemuDriver;
  let handle: TaskHandle;

  beforeAll(() => {
    // Short: the QMP socket path must fit in 107 bytes.
    stateDir = mkdtempSync('/tmp/cu-');
    imagePath = writeUnikernelImage(stateDir);
    driver = new QemuDriver({ accelerator: 'tcg', stateDir: join(stateDir, 'qemu'), defaultMemoryMb: 64, defaultVcpus: 1, logger: silentLogger, quitWaitMs: 5000 });
  });

  afterAll(async () => {
    for (const pid of qemuProcessesUnder(stateDir)) if (isProcessAlive(pid)) killProcessGroup(pid, 'SIGKILL');
    await eventually(() => (qemuProcessesUnder(stateDir).length === 0 ? true : undefined), { timeoutMs: 10_000, what: 'no qemu left' });
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('boots the image through the firmware from an overlay of its own, and its serial console can be followed', async () => {
    const before = sha256(imagePath);
    const spec: TaskSpec = { workloadId: 'uk-main', name: 'uk-main', command: [], env: {}, labels: {}, image: imagePath, resources: { memoryMb: 64, vcpus: 1 }, ports: [] };
    handle = await driver.start(spec);
    const pid = (handle.state as { pid: number }).pid;
    expect(isProcessAlive(pid)).toBe(true);
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv).not.toContain('-kernel');
    const drive = argv[argv.indexOf('-drive') + 1];
    expect(drive).toContain(join(stateDir, 'qemu', 'uk-main'));
    expect(drive).toContain('format=qcow2');

    // Followed by offset, as StreamLogs does: every read continues where the last ended.
    let offset = 0;
    let seen = '';
    await eventually(
      async () => {
        const range = await driver.readLogsFrom(handle, { offset, maxBytes: 4096 });
        offset += range.data.length;
        seen += range.data.toString('latin1');
        return seen.includes(UNIKERNEL_READY_MARKER) ? true : undefined;
      },
      { timeoutMs: 60_000, what: 'the unikernel marker on the serial console' },
    );
    expect(offset).toBe((await driver.readLogsFrom(handle, { offset: 0, maxBytes: 0 })).size);
    expect((await driver.readLogs(handle, { tailBytes: 4096 })).data.toString('latin1')).toContain(UNIKERNEL_READY_MARKER);
    expect(sha256(imagePath)).toBe(before);
  });

  it('pauses and resumes through QMP', async () => {
    await driver.pause(handle);
    expect(await driver.vmStatus(handle)).toBe('paused');
    await driver.resume(handle);
    expect(await driver.vmStatus(handle)).toBe('running');
  });

  it('stops a guest that ignores the powerdown (quit after the timeout), and destroy leaves nothing behind', async () => {
    await driver.stop(handle, { signal: 'SIGTERM', timeoutMs: 2000 });
    expect(await driver.inspect(handle)).toMatchObject({ running: false });
    expect(qemuProcessesUnder(stateDir)).toEqual([]);
    await driver.destroy(handle, { force: true });
    expect(existsSync(join(stateDir, 'qemu', 'uk-main'))).toBe(false);
    expect(existsSync(imagePath)).toBe(true);
  });
});
