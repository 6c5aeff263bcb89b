import { isAbsolute } from 'node:path';
import { InvalidArgumentError } from '@corral/domain';
import type { PortMapping, TaskSpec } from '../driver';

// What a VM is (its machine) and the qemu argv that runs it, as pure
// functions: no I/O here, so every rule is unit-tested. qemu is started with
// this argv directly, never through a shell. The one place a shell is
// involved is inside qemu: migration to/from `exec:` runs its command with
// /bin/sh, so those paths are restricted to characters that need no quoting.

export type Accelerator = 'kvm' | 'tcg';

export type VmBoot =
  /** Direct kernel boot: qemu loads the kernel and initrd itself (no bootloader). */
  | { mode: 'microvm'; kernel: string; initrd?: string; kernelArgs: string }
  /** The first disk is a bootable image (a unikernel), booted by the firmware. */
  | { mode: 'unikernel' };

export interface VmDisk {
  path: string;
  /** As qemu-img names it: raw or qcow2. */
  format: string;
  /** True when the driver made it (an overlay in the task dir) and must carry it along in snapshots. */
  owned?: boolean;
  /**
   * True for the task's own clone from the volume manager (spec.vm.disk):
   * not the driver's to delete, but the task's alone, so a snapshot copies
   * it like an owned disk (a restore must not share the source's writes).
   */
  clone?: boolean;
}

/**
 * Everything that must be identical between a VM and its restore from a
 * snapshot (migration needs the same machine and devices on both sides).
 * Host port forwards are not part of it: a restored VM may get new ones.
 */
export interface VmMachine {
  accelerator: Accelerator;
  /** `-machine` type; q35 (see QEMU_MACHINE_TYPE). */
  machineType: string;
  memoryMb: number;
  vcpus: number;
  boot: VmBoot;
  disks: VmDisk[];
  /**
   * A virtio-serial port for the QEMU guest agent (qemu-ga), reached on the
   * host through `VmRunFiles.qgaSocket`. Part of the machine because a
   * restore needs the same devices; absent in snapshots taken before the
   * port existed, which are restored without it.
   */
  guestAgent?: boolean;
}

/** Where qemu keeps its per-VM files. */
export interface VmRunFiles {
  consoleLog: string;
  qmpSocket: string;
  pidFile: string;
  /** The guest agent's channel, served by qemu; required when the machine has `guestAgent`. */
  qgaSocket?: string;
}

/** The virtio-serial port name qemu-ga looks for (what libvirt and QEMU's tools use). */
export const GUEST_AGENT_PORT_NAME = 'org.qemu.guest_agent.0';

export interface QemuArgsOptions {
  /** `-name`, shown in ps and QMP. */
  name: string;
  ports: readonly PortMapping[];
  /** Host address the forwards listen on. */
  hostAddress: string;
  /**
   * Let the guest open connections out through qemu's NAT. Off by default:
   * user networking maps 10.0.2.2 to the host's own loopback, so a guest
   * with egress can reach every service listening on 127.0.0.1 (the
   * agent's database, NATS...). Port forwards into the guest work either way.
   */
  egress?: boolean;
  /** Start from a snapshot written by `migrationWriteUri` instead of booting. */
  incomingFile?: string;
}

/**
 * q35, measured: Debian's cloud kernel boots on it under tcg in ≈4–6 s and
 * powers off on ACPI powerdown. The `microvm` machine (with pcie=on for
 * virtio-net-pci, with or without pit/pic) hangs that kernel in early TSC
 * calibration under tcg (no HPET/PM timer), and the kernel has no ACPI GED
 * driver, so `system_powerdown` could not reach the guest there anyway.
 */
export const QEMU_MACHINE_TYPE = 'q35';

/** Added to a microVM's kernel command line when it sets no console= / panic=. */
export const SERIAL_CONSOLE_ARG = 'console=ttyS0';
/** A panicking guest reboots at once, and -no-reboot turns that into qemu exiting. */
export const PANIC_ARG = 'panic=-1';

const MAX_KERNEL_ARGS = 2048;
const MIN_MEMORY_MB = 32;
const MAX_MEMORY_MB = 1024 * 1024;
const MAX_VCPUS = 255;

export interface MachineDefaults {
  accelerator: Accelerator;
  machineType?: string;
  memoryMb: number;
  vcpus: number;
  /** Give the machine the guest agent's virtio-serial port. */
  guestAgent?: boolean;
}

/**
 * The machine for a task spec, validated. Disk formats are not known here
 * (qemu-img tells them), so `disks` holds the paths in boot order and the
 * caller fills in formats.
 */
export function machineFromSpec(spec: TaskSpec, defaults: MachineDefaults): { machine: Omit<VmMachine, 'disks'>; diskPaths: string[] } {
  const vm = spec.vm;
  const mode = vm?.mode ?? (spec.image ? 'unikernel' : undefined);
  if (!mode) throw new InvalidArgumentError('a qemu task needs spec.vm (microvm boot media) or spec.image (a unikernel image)', { field: 'spec.vm' });
  const memoryMb = spec.resources?.memoryMb ?? defaults.memoryMb;
  const vcpus = spec.resources?.vcpus ?? defaults.vcpus;
  if (!Number.isInteger(memoryMb) || memoryMb < MIN_MEMORY_MB || memoryMb > MAX_MEMORY_MB) {
    throw new InvalidArgumentError(`memory must be a whole number of MiB between ${MIN_MEMORY_MB} and ${MAX_MEMORY_MB}`, { field: 'spec.resources.memoryMb' });
  }
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MAX_VCPUS) {
    throw new InvalidArgumentError(`vcpus must be a whole number between 1 and ${MAX_VCPUS}`, { field: 'spec.resources.vcpus' });
  }
  let boot: VmBoot;
  const diskPaths: string[] = [];
  if (mode === 'microvm') {
    if (!vm?.kernel) throw new InvalidArgumentError('a microVM needs a kernel', { field: 'spec.vm.kernel' });
    boot = {
      mode,
      kernel: checkedPath(vm.kernel, 'spec.vm.kernel'),
      ...(vm.initrd ? { initrd: checkedPath(vm.initrd, 'spec.vm.initrd') } : {}),
      kernelArgs: kernelCommandLine(vm.kernelArgs),
    };
    if (vm.disk) diskPaths.push(checkedPath(vm.disk, 'spec.vm.disk'));
  } else if (mode === 'unikernel') {
    // The task's own clone when the volume manager made one, else the image
    // itself (the driver then puts an overlay over it).
    const image = vm?.disk ?? spec.image;
    if (!image) throw new InvalidArgumentError('a unikernel needs spec.image (or spec.vm.disk)', { field: 'spec.image' });
    boot = { mode };
    diskPaths.push(checkedPath(image, vm?.disk ? 'spec.vm.disk' : 'spec.image'));
  } else {
    throw new InvalidArgumentError(`unknown vm mode ${JSON.stringify(mode)}: use microvm or unikernel`, { field: 'spec.vm.mode' });
  }
  checkPorts(spec.ports ?? []);
  return {
    machine: { accelerator: defaults.accelerator, machineType: defaults.machineType ?? QEMU_MACHINE_TYPE, memoryMb, vcpus, boot, ...(defaults.guestAgent ? { guestAgent: true } : {}) },
    diskPaths,
  };
}

/** The kernel command line, with a serial console and panic=-1 unless the spec chose its own. */
export function kernelCommandLine(kernelArgs: string | undefined): string {
  const given = (kernelArgs ?? '').trim();
  if (hasControlCharacters(given)) throw new InvalidArgumentError('kernel arguments must not contain control characters', { field: 'spec.vm.kernelArgs' });
  const added: string[] = [];
  if (!/(^|\s)console=/.test(given)) added.push(SERIAL_CONSOLE_ARG);
  if (!/(^|\s)panic=/.test(given)) added.push(PANIC_ARG);
  const line = [...added, given].filter(Boolean).join(' ');
  if (line.length > MAX_KERNEL_ARGS) throw new InvalidArgumentError(`kernel arguments must be at most ${MAX_KERNEL_ARGS} characters`, { field: 'spec.vm.kernelArgs' });
  return line;
}

export function checkPorts(ports: readonly PortMapping[]): void {
  const seen = new Set<string>();
  ports.forEach((port, i) => {
    const field = `spec.ports[${i}]`;
    if (port.protocol !== 'tcp' && port.protocol !== 'udp') throw new InvalidArgumentError('protocol must be tcp or udp', { field: `${field}.protocol` });
    for (const key of ['hostPort', 'guestPort'] as const) {
      const value = port[key];
      if (!Number.isInteger(value) || value < 1 || value > 65535) throw new InvalidArgumentError(`${key} must be a port number`, { field: `${field}.${key}` });
    }
    const key = `${port.protocol}:${port.hostPort}`;
    if (seen.has(key)) throw new InvalidArgumentError(`host port ${port.hostPort}/${port.protocol} is forwarded twice`, { field: `${field}.hostPort` });
    seen.add(key);
  });
}

/**
 * `-netdev user,…` with one hostfwd per port: HOSTADDR:HOSTPORT to the
 * guest's (default) address, GUESTPORT; `restrict=on` unless egress is allowed.
 */
export function netdevArg(ports: readonly PortMapping[], hostAddress: string, egress = false): string {
  checkPorts(ports);
  if (!/^[0-9.]+$/.test(hostAddress)) throw new InvalidArgumentError('host address must be an IPv4 address', { field: 'hostAddress' });
  const forwards = ports.map((p) => `hostfwd=${p.protocol}:${hostAddress}:${p.hostPort}-:${p.guestPort}`);
  return ['user', 'id=n0', ...(egress ? [] : ['restrict=on']), ...forwards].join(',');
}

/** The full qemu argv (without the program itself). */
export function buildQemuArgs(machine: VmMachine, files: VmRunFiles, options: QemuArgsOptions): string[] {
  for (const [key, path] of Object.entries(files)) if (path !== undefined) checkedPath(path, key);
  if (!/^[A-Za-z0-9_-]+$/.test(options.name)) throw new InvalidArgumentError('VM name may hold letters, digits, _ and - only', { field: 'name' });
  const args = [
    '-name', options.name,
    '-machine', machine.machineType,
    '-accel', machine.accelerator,
    ...(machine.accelerator === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', String(machine.memoryMb),
    '-smp', String(machine.vcpus),
    // No default devices (VGA, floppy, default NIC, monitor), no user config
    // files, no display: the serial console goes to a file, control to QMP.
    '-nodefaults', '-no-user-config', '-nographic',
    '-serial', `file:${files.consoleLog}`,
    '-qmp', `unix:${files.qmpSocket},server=on,wait=off`,
    '-pidfile', files.pidFile,
    // A guest reboot (or a panic, with panic=-1) ends qemu: the supervisor decides what happens next.
    '-no-reboot',
    '-netdev', netdevArg(options.ports, options.hostAddress, options.egress),
    // romfile= : no PXE option ROM, nothing boots from the network.
    '-device', 'virtio-net-pci,netdev=n0,romfile=',
  ];
  if (machine.boot.mode === 'microvm') {
    args.push('-kernel', machine.boot.kernel);
    if (machine.boot.initrd) args.push('-initrd', machine.boot.initrd);
    args.push('-append', machine.boot.kernelArgs);
  }
  machine.disks.forEach((disk, i) => {
    if (!/^[a-z0-9]+$/.test(disk.format)) throw new InvalidArgumentError(`unsupported disk format ${JSON.stringify(disk.format)}`, { field: `disks[${i}].format` });
    args.push('-drive', `file=${qemuOptionValue(disk.path)},format=${disk.format},if=virtio,discard=unmap`);
  });
  if (machine.guestAgent) args.push(...guestAgentArgs(files.qgaSocket));
  if (options.incomingFile) args.push('-incoming', migrationReadUri(options.incomingFile));
  return args;
}

/**
 * The guest agent's channel: a virtio-serial controller with one named port,
 * backed by a unix socket qemu listens on (wait=off: qemu does not wait for
 * a client to boot the guest; the driver connects for each agent session).
 */
export function guestAgentArgs(qgaSocket: string | undefined): string[] {
  if (!qgaSocket) throw new InvalidArgumentError('a machine with a guest agent port needs its socket path', { field: 'qgaSocket' });
  checkedPath(qgaSocket, 'qgaSocket');
  return [
    '-chardev', `socket,id=qga0,path=${qgaSocket},server=on,wait=off`,
    '-device', 'virtio-serial-pci,id=qga-serial0',
    '-device', `virtserialport,bus=qga-serial0.0,chardev=qga0,name=${GUEST_AGENT_PORT_NAME}`,
  ];
}

/** Commas separate qemu options; a literal comma inside a value is doubled. */
export function qemuOptionValue(value: string): string {
  return value.replaceAll(',', ',,');
}

// Snapshot files are handed to /bin/sh inside qemu (exec: migration), so
// only characters that are inert between single quotes are accepted.
const SHELL_SAFE_PATH = /^\/[A-Za-z0-9._/+@=-]+$/;

export function checkSnapshotPath(path: string, field = 'file'): string {
  if (!SHELL_SAFE_PATH.test(path) || path.split('/').includes('..')) {
    throw new InvalidArgumentError('snapshot path must be absolute and use only letters, digits and . _ / + @ = -', { field });
  }
  return path;
}

/**
 * `exec:` URI that writes the migration stream to a file. qemu SIGTERMs its
 * exec child as soon as it has closed the pipe (and SIGKILLs it 10 ms
 * later), which could cut off the last bytes still in the pipe; the writer
 * ignores SIGTERM (inherited by cat), and the driver checks the file's end
 * before calling it a snapshot.
 */
export function migrationWriteUri(path: string): string {
  return `exec:trap '' TERM; cat > '${checkSnapshotPath(path)}'`;
}

/** `exec:` URI that reads a migration stream back (`-incoming`). */
export function migrationReadUri(path: string): string {
  return `exec:cat '${checkSnapshotPath(path)}'`;
}

function checkedPath(path: string, field: string): string {
  if (typeof path !== 'string' || !isAbsolute(path)) throw new InvalidArgumentError('path must be absolute', { field });
  // qemu reads commas in several of these options as separators (-initrd,
  // file: chardevs, unix: sockets); -drive escapes them, the others cannot.
  if (path.includes(',') || hasControlCharacters(path)) throw new InvalidArgumentError('path must not contain commas or control characters', { field });
  return path;
}

function hasControlCharacters(value: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u001f\u007f]/.test(value);
}
