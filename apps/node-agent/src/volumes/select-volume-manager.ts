import { closeSync, openSync } from 'node:fs';
import { createExecutor, resolveProgram, type Executor } from '@corral/exec';
import type { Logger } from '@corral/logging';
import { DMSETUP, LOSETUP } from './dm-commands';
import { DeviceMapperVolumeManager } from './device-mapper-volume-manager';
import { QEMU_IMG } from './qemu-img';
import { Qcow2VolumeManager } from './qcow2-volume-manager';
import type { VolumeManager, VolumeManagerKind } from './volume-manager';

// Device-mapper snapshots where the kernel has device-mapper and dmsetup is
// installed; qcow2 overlays everywhere else. The control node existing is not
// enough: libdevmapper creates /dev/mapper/control itself (mknod 10:236) on a
// kernel without the driver, and opening it then fails with ENODEV. So the
// node is opened, never created, and dmsetup is never run to find out.

export const DM_CONTROL_PATH = '/dev/mapper/control';

export interface VolumeCapability {
  kind: VolumeManagerKind;
  /** Why, for the start-up log and the driver fingerprint. */
  reason: string;
  /** Whether the chosen kind's programs are all installed. */
  usable: boolean;
}

export interface CapabilityProbe {
  /** Default /dev/mapper/control. */
  controlPath?: string;
  /** Where programs are looked up. Default: this process's PATH. */
  searchPath?: string;
  /** Opens and closes the control node; undefined when it works, else why not. Tests pass a fake. */
  checkControl?: (path: string) => string | undefined;
}

/** Whether the device-mapper control node opens: undefined when it does, else the reason it does not. */
export function checkDeviceMapperControl(path: string = DM_CONTROL_PATH): string | undefined {
  try {
    closeSync(openSync(path, 'r+'));
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `no ${path}`;
    if (code === 'ENODEV' || code === 'ENXIO') return `${path} exists but the kernel has no device-mapper driver`;
    if (code === 'EACCES' || code === 'EPERM') return `${path} is not accessible (device-mapper needs root)`;
    return `${path} cannot be opened (${code ?? 'unknown error'})`;
  }
}

export function detectVolumeCapability(probe: CapabilityProbe = {}): VolumeCapability {
  const controlPath = probe.controlPath ?? DM_CONTROL_PATH;
  const searchPath = probe.searchPath ?? process.env.PATH;
  const has = (program: string) => resolveProgram(program, searchPath) !== undefined;
  const qemuImg = has(QEMU_IMG);
  const noControl = (probe.checkControl ?? checkDeviceMapperControl)(controlPath);
  if (noControl !== undefined) {
    return { kind: 'qcow2', reason: `${noControl}: qcow2 overlays${qemuImg ? '' : ' (qemu-img is not installed)'}`, usable: qemuImg };
  }
  if (!has(DMSETUP)) {
    return { kind: 'qcow2', reason: `dmsetup is not installed: qcow2 overlays${qemuImg ? '' : ' (qemu-img is not installed)'}`, usable: qemuImg };
  }
  const losetup = has(LOSETUP);
  return { kind: 'device-mapper', reason: `${controlPath} works and dmsetup is installed: device-mapper snapshots${losetup ? '' : ' (losetup is not installed)'}`, usable: losetup };
}

export interface SelectVolumeManagerOptions extends CapabilityProbe {
  stateDir: string;
  logger: Logger;
  /** Default: an executor allowed exactly the programs of the chosen kind. */
  executor?: Executor;
  /** Skip detection (configuration or tests). */
  force?: VolumeManagerKind;
}

export interface VolumeManagerSelection {
  manager: VolumeManager;
  capability: VolumeCapability;
}

/** Picks and builds the volume manager for this host. Call `manager.reconcile()` next. */
export function selectVolumeManager(options: SelectVolumeManagerOptions): VolumeManagerSelection {
  const detected = detectVolumeCapability(options);
  const capability: VolumeCapability = options.force && options.force !== detected.kind
    ? { kind: options.force, reason: `${options.force} forced by configuration (detected: ${detected.reason})`, usable: true }
    : detected;
  const programs = capability.kind === 'device-mapper' ? [DMSETUP, LOSETUP] : [QEMU_IMG];
  const executor = options.executor ?? createExecutor({ allowedPrograms: programs, logger: options.logger, searchPath: options.searchPath });
  const common = { stateDir: options.stateDir, executor, logger: options.logger };
  const manager = capability.kind === 'device-mapper' ? new DeviceMapperVolumeManager(common) : new Qcow2VolumeManager(common);
  options.logger.info('volume manager selected', { kind: capability.kind, reason: capability.reason, usable: capability.usable });
  return { manager, capability };
}
