import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSupervised, type ExitStatus, type SupervisedProcess } from '@corral/exec';
import type { MicrovmImage } from '@corral/testing';
import { checkMigrationFile } from '../../../apps/node-agent/src/drivers/qemu/migration-file';
import { QmpClient } from '../../../apps/node-agent/src/drivers/qemu/qmp-client';
import { now, sleep } from '../lib/stats';

// The qemu baseline: a bare qemu-system-x86_64 booting the same kernel and
// initramfs as the same machine Corral's driver builds (q35, tcg, memory,
// vcpus, virtio-net with a hostfwd to the guest's httpd, serial console to
// a file, a QMP socket), started with spawn and nothing else. QMP is spoken
// with the driver's small protocol client (connect, greeting,
// qmp_capabilities, one command): the raw cost of a QMP round trip, without
// the driver's serialisation, status checks and the supervisor's records.

export interface RawVmOptions {
  qemuPath: string;
  image: MicrovmImage;
  /** A fresh directory for this VM's socket and logs. */
  dir: string;
  name: string;
  hostPort: number;
  memoryMb: number;
  vcpus: number;
  /** Start from this migration stream instead of booting. */
  incomingFile?: string;
}

export interface RawVm {
  child: SupervisedProcess;
  qmpSocket: string;
  exited: Promise<ExitStatus>;
  /** Set once qemu has exited. */
  exit?: ExitStatus;
}

export function rawQemuArgs(o: RawVmOptions): string[] {
  const qmpSocket = join(o.dir, 'qmp.sock');
  return [
    '-name', o.name,
    '-machine', 'q35',
    '-accel', 'tcg',
    '-m', String(o.memoryMb),
    '-smp', String(o.vcpus),
    '-nodefaults', '-no-user-config', '-nographic',
    '-serial', `file:${join(o.dir, 'console.log')}`,
    '-qmp', `unix:${qmpSocket},server=on,wait=off`,
    '-no-reboot',
    '-netdev', `user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:${o.hostPort}-:${o.image.guestHttpPort}`,
    '-device', 'virtio-net-pci,netdev=n0,romfile=',
    '-kernel', o.image.kernel,
    '-initrd', o.image.initrd,
    '-append', o.image.kernelArgs,
    ...(o.incomingFile ? ['-incoming', `exec:cat '${o.incomingFile}'`] : []),
  ];
}

export async function startRawVm(o: RawVmOptions): Promise<RawVm> {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const child = await spawnSupervised({ program: o.qemuPath, args: rawQemuArgs(o), env: { PATH: '/usr/local/bin:/usr/bin:/bin' }, cwd: o.dir, logPath: join(o.dir, 'qemu.log') });
  const vm: RawVm = { child, qmpSocket: join(o.dir, 'qmp.sock'), exited: child.wait() };
  void vm.exited.then((status) => (vm.exit = status));
  return vm;
}

/** SIGKILLs the VM's process group and waits for qemu to exit. */
export async function killRawVm(vm: RawVm): Promise<void> {
  if (!vm.exit) vm.child.kill('SIGKILL');
  await vm.exited;
}

/** One QMP session: connect (retrying while the socket is not there yet), run `fn`, close. */
export async function withRawQmp<T>(vm: RawVm, fn: (qmp: QmpClient) => Promise<T>): Promise<T> {
  const qmp = await QmpClient.connectWithRetry(vm.qmpSocket, { retryForMs: 30_000, retryIntervalMs: 5, shouldRetry: () => !vm.exit });
  try {
    return await fn(qmp);
  } finally {
    qmp.close();
  }
}

export const rawQmpCommand = (vm: RawVm, command: string) => withRawQmp(vm, (qmp) => qmp.execute(command));

export const rawQmpStatus = (vm: RawVm) => withRawQmp(vm, async (qmp) => (await qmp.execute<{ status: string }>('query-status')).status);

/**
 * Raw memory snapshot: stop, migrate to `exec:cat > FILE` (the writer
 * ignores the SIGTERM qemu sends it once the pipe is closed), poll until the
 * migration completes and the file holds the whole stream. Leaves the VM stopped.
 */
export async function rawSnapshot(vm: RawVm, file: string, timeoutMs = 120_000): Promise<{ bytes: number; ms: number }> {
  const started = now();
  await withRawQmp(vm, async (qmp) => {
    await qmp.execute('stop');
    await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 64 * 1024 * 1024 * 1024 });
    await qmp.execute('migrate', { uri: `exec:trap '' TERM; cat > '${file}'` });
    for (;;) {
      const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (info.status === 'completed') return;
      if (info.status === 'failed' || info.status === 'cancelled') throw new Error(`raw migration ${info.status}: ${info['error-desc'] ?? ''}`);
      if (now() - started > timeoutMs) throw new Error('raw migration did not finish in time');
      await sleep(20);
    }
  });
  for (;;) {
    const check = await checkMigrationFile(file).catch(() => undefined);
    if (check?.complete) return { bytes: check.bytes, ms: now() - started };
    if (now() - started > timeoutMs) throw new Error(`raw snapshot file is incomplete: ${check && !check.complete ? check.reason : 'not written'}`);
    await sleep(20);
  }
}

/** After `-incoming`: wait until the state has loaded, then `cont`. */
export async function rawFinishIncoming(vm: RawVm, timeoutMs = 120_000): Promise<void> {
  const started = now();
  await withRawQmp(vm, async (qmp) => {
    for (;;) {
      const { status } = await qmp.execute<{ status: string }>('query-status');
      if (status !== 'inmigrate') break;
      if (now() - started > timeoutMs) throw new Error('the raw restore did not load in time');
      await sleep(5);
    }
    await qmp.execute('cont');
  });
}

/** Options that take a value, compared by their first comma-separated part (the device or backend type). */
const VALUE_OPTIONS = new Set(['-name', '-machine', '-accel', '-cpu', '-m', '-smp', '-serial', '-qmp', '-pidfile', '-netdev', '-device', '-chardev', '-drive', '-kernel', '-initrd', '-append', '-incoming', '-global', '-object']);
const TYPE_ONLY = new Set(['-device', '-chardev', '-netdev', '-drive', '-object', '-machine', '-accel', '-cpu', '-m', '-smp']);

function optionKeys(argv: readonly string[]): string[] {
  const keys: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (!flag.startsWith('-')) continue;
    if (VALUE_OPTIONS.has(flag)) {
      const value = argv[++i] ?? '';
      keys.push(TYPE_ONLY.has(flag) ? `${flag} ${value.split(',')[0]}` : flag);
    } else {
      keys.push(flag);
    }
  }
  return keys;
}

/** What Corral's qemu command line has that the raw one lacks, and the reverse (options and device types, not paths or ports). */
export function qemuArgvDifference(corral: readonly string[], raw: readonly string[]): { corralOnly: string[]; rawOnly: string[] } {
  const c = optionKeys(corral);
  const r = optionKeys(raw);
  const minus = (a: string[], b: string[]) => {
    const rest = [...b];
    return a.filter((key) => {
      const at = rest.indexOf(key);
      if (at < 0) return true;
      rest.splice(at, 1);
      return false;
    });
  };
  return { corralOnly: minus(c, r), rawOnly: minus(r, c) };
}
