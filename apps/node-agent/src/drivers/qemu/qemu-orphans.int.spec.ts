import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isProcessAlive, killProcessGroup, resolveProgram } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { ensureMicrovmImage, eventually, microvmImageUnavailableReason, qemuProcessesUnder, type MicrovmImage } from '@corral/testing';
import type { TaskSpec } from '../driver';
import { QemuDriver } from './qemu-driver';

// An orphaned VM with real qemu: a driver instance that has no record of a
// running qemu (the agent lost it, or another instance started it) finds it
// by its task directory and removes it, qemu process and directory both.

const qemuPath = resolveProgram('qemu-system-x86_64', process.env.PATH);
const skipReason = !qemuPath ? 'qemu-system-x86_64 is not installed' : microvmImageUnavailableReason();
if (skipReason) console.log(`[skip] qemu orphaned VMs (real qemu): ${skipReason}`);
const describeWithQemu = skipReason ? describe.skip : describe;

describeWithQemu('qemu driver finds and removes orphaned VMs (real qemu, tcg)', () => {
  jest.setTimeout(120_000);
  let stateDir: string;
  let image: MicrovmImage;

  const newDriver = () => new QemuDriver({ accelerator: 'tcg', stateDir, defaultMemoryMb: 128, defaultVcpus: 1, logger: silentLogger, guestAgent: false });
  const vmSpec = (workloadId: string): TaskSpec => ({
    workloadId,
    name: workloadId,
    command: [],
    env: {},
    labels: {},
    vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: image.kernelArgs },
    resources: { memoryMb: 128, vcpus: 1 },
  });

  beforeAll(async () => {
    // Short: the QMP socket path must fit in 107 bytes.
    stateDir = mkdtempSync('/tmp/cqo-');
    image = await ensureMicrovmImage();
  });

  afterAll(async () => {
    for (const pid of qemuProcessesUnder(stateDir)) if (isProcessAlive(pid)) killProcessGroup(pid, 'SIGKILL');
    await eventually(() => (qemuProcessesUnder(stateDir).length === 0 ? true : undefined), { timeoutMs: 10_000, what: 'no qemu left' });
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('lists a running VM another driver instance started, and removes it', async () => {
    const handle = await newDriver().start(vmSpec('vm-orphan'));
    const pid = Number(handle.displayId);
    expect(qemuProcessesUnder(stateDir)).toEqual([pid]);

    const fresh = newDriver();
    const listed = await fresh.listLabelled();
    expect(listed).toEqual([{ workloadId: 'vm-orphan', running: true, createdAt: expect.anything(), displayId: String(pid) }]);
    // fs dates come from node's realm, not jest's: checked by value.
    expect(Number.isFinite(listed[0].createdAt.getTime())).toBe(true);

    await fresh.removeLabelled('vm-orphan');
    expect(isProcessAlive(pid)).toBe(false);
    expect(qemuProcessesUnder(stateDir)).toEqual([]);
    expect(existsSync(join(stateDir, 'vm-orphan'))).toBe(false);
    expect(await fresh.listLabelled()).toEqual([]);
    await fresh.removeLabelled('vm-orphan'); // idempotent
  });

  it('does not list the directory of a VM that has ended', async () => {
    const driver = newDriver();
    const handle = await driver.start(vmSpec('vm-ended'));
    await driver.stop(handle, { signal: 'SIGKILL', timeoutMs: 0 });
    expect(existsSync(join(stateDir, 'vm-ended', 'qemu.pid'))).toBe(true);
    expect(await newDriver().listLabelled()).toEqual([]);
    await driver.destroy(handle, { force: true });
  });
});
