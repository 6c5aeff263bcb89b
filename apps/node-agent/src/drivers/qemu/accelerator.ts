import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isProcessAlive, spawnSupervised } from '@corral/exec';
import type { Accelerator } from './qemu-args';

// Which accelerator a VM runs under. tcg (qemu's own CPU emulation) works
// everywhere. kvm is much faster where it works, but a /dev/kvm that opens
// proves little: on the machines this project was built on, /dev/kvm opens
// and a few instructions of guest code even run under kvm, yet a Linux guest
// hangs early in boot (or qemu aborts setting an MSR with -cpu host). A hung
// guest never says so, so kvm is only trusted for `auto` after a configured
// probe boots a real kernel under kvm and sees the expected console line
// within a time limit. Without a probe, `auto` means tcg; `kvm` explicitly
// configured means kvm (the operator knows the host).

export type AcceleratorSetting = 'kvm' | 'tcg' | 'auto';

/** A real guest booted under kvm, with a bound on how long it may take. */
export interface KvmProbeConfig {
  kernel: string;
  initrd?: string;
  /** Default `console=ttyS0 panic=-1`. */
  kernelArgs?: string;
  /** Text the guest writes to its serial console once it is up. */
  expect: string;
  /** Default 30 s. The probe never takes longer. */
  timeoutMs?: number;
  memoryMb?: number;
}

export interface ProbeOutcome {
  passed: boolean;
  detail: string;
  durationMs: number;
}

export interface KvmState {
  /** /dev/kvm could be opened read-write. */
  deviceOk: boolean;
  deviceDetail: string;
  /** Absent when no probe is configured. */
  probe?: ProbeOutcome;
}

export interface AcceleratorChoice {
  /** undefined: VMs cannot run as configured (see reason). */
  accelerator: Accelerator | undefined;
  reason: string;
  /** Accelerators that work here as far as is known. */
  usable: Accelerator[];
}

export async function checkKvmDevice(device = '/dev/kvm'): Promise<{ ok: boolean; detail: string }> {
  try {
    const handle = await open(device, constants.O_RDWR);
    await handle.close();
    return { ok: true, detail: `${device} opens` };
  } catch (err) {
    return { ok: false, detail: `${device} cannot be opened (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  }
}

export function chooseAccelerator(setting: AcceleratorSetting, kvm: KvmState): AcceleratorChoice {
  const kvmUsable = kvm.deviceOk && kvm.probe?.passed === true;
  const usable: Accelerator[] = kvmUsable ? ['tcg', 'kvm'] : ['tcg'];
  const kvmDetail = !kvm.deviceOk ? kvm.deviceDetail : kvm.probe ? `kvm probe ${kvm.probe.passed ? 'passed' : 'failed'}: ${kvm.probe.detail}` : 'no kvm probe configured';
  switch (setting) {
    case 'tcg':
      return { accelerator: 'tcg', reason: 'configured: tcg', usable };
    case 'kvm':
      if (!kvm.deviceOk) return { accelerator: undefined, reason: `configured: kvm, but ${kvm.deviceDetail}`, usable };
      if (kvm.probe && !kvm.probe.passed) return { accelerator: undefined, reason: `configured: kvm, but the kvm probe failed: ${kvm.probe.detail}`, usable };
      return { accelerator: 'kvm', reason: `configured: kvm (${kvmDetail})`, usable: kvm.probe ? usable : ['tcg', 'kvm'] };
    case 'auto':
      if (kvmUsable) return { accelerator: 'kvm', reason: `auto: ${kvmDetail}`, usable };
      return { accelerator: 'tcg', reason: `auto: tcg, as kvm is not proven here (${kvmDetail}; guests can hang under kvm on hosts where /dev/kvm opens)`, usable };
    default:
      return { accelerator: undefined, reason: `unknown accelerator setting ${JSON.stringify(setting)}`, usable };
  }
}

/**
 * Boots the probe guest under kvm and waits for its console line, killing
 * qemu when it appears, when qemu exits, or at the time limit, whichever
 * comes first.
 */
export async function runKvmProbe(options: { qemuPath: string; workRoot: string; probe: KvmProbeConfig; pollMs?: number }): Promise<ProbeOutcome> {
  const { probe } = options;
  const timeoutMs = probe.timeoutMs ?? 30_000;
  const started = Date.now();
  const dir = await mkdtemp(join(options.workRoot, 'kvm-probe-'));
  const consoleLog = join(dir, 'console.log');
  const args = [
    '-machine', 'q35', '-accel', 'kvm', '-cpu', 'host',
    '-m', String(probe.memoryMb ?? 128), '-smp', '1',
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', `file:${consoleLog}`,
    '-kernel', probe.kernel,
    ...(probe.initrd ? ['-initrd', probe.initrd] : []),
    '-append', probe.kernelArgs ?? 'console=ttyS0 panic=-1',
  ];
  const done = (passed: boolean, detail: string): ProbeOutcome => ({ passed, detail, durationMs: Date.now() - started });
  try {
    let child;
    try {
      child = await spawnSupervised({ program: options.qemuPath, args, env: { PATH: '/usr/bin:/bin' }, cwd: dir, logPath: join(dir, 'qemu.log') });
    } catch (err) {
      return done(false, `qemu could not be started (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    let exited = false;
    void child.wait().then(() => (exited = true));
    try {
      for (;;) {
        const text = await readFile(consoleLog, 'utf8').catch(() => '');
        if (text.includes(probe.expect)) return done(true, `guest reached ${JSON.stringify(probe.expect)} in ${Date.now() - started} ms`);
        if (exited || !isProcessAlive(child.pid)) {
          const log = (await readFile(join(dir, 'qemu.log'), 'utf8').catch(() => '')).trim().split('\n').at(-1) ?? '';
          return done(false, `qemu exited before the guest was up${log ? `: ${log.slice(0, 200)}` : ''}`);
        }
        if (Date.now() - started >= timeoutMs) return done(false, `guest did not reach ${JSON.stringify(probe.expect)} within ${timeoutMs} ms (hangs under kvm)`);
        await new Promise((r) => setTimeout(r, options.pollMs ?? 100));
      }
    } finally {
      child.kill('SIGKILL');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([child.wait(), new Promise((r) => (timer = setTimeout(r, 5000)))]);
      clearTimeout(timer);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
