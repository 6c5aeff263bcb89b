import { createHash } from 'node:crypto';
import { isAbsolute } from 'node:path';
import { InvalidArgumentError, NotFoundError } from '@corral/domain';
import { execErrorFromResult, type Command } from '@corral/exec';

// losetup and dmsetup calls as data, for the device-mapper volume manager.
// Device-mapper snapshot: `0 <sectors> snapshot <origin> <cow> P <chunk>`,
// where the origin is a read-only loop device over the base image and the
// copy-on-write store a loop device over a per-workload sparse file
// (persistent `P`, so the exceptions survive a reboot in the file).

export const LOSETUP = 'losetup';
export const DMSETUP = 'dmsetup';

/** Marks Corral's device-mapper devices, so leak checks never touch anyone else's. */
export const DM_UUID_PREFIX = 'CORRAL-';
/** 4 KiB copy-on-write chunks (in 512-byte sectors). */
export const DEFAULT_CHUNK_SECTORS = 8;
const LOOP_DEVICE = /^\/dev\/loop\d+$/;
const DM_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,126}$/;

export interface LoopDevice {
  /** /dev/loopN */
  name: string;
  /** The file behind it; a deleted one loses its ` (deleted)` suffix here. */
  backFile: string | undefined;
  readOnly: boolean;
}

/** Reads `losetup --list --json --output NAME,BACK-FILE,RO`. */
export function parseLosetupList(stdout: string): LoopDevice[] {
  if (stdout.trim() === '') return [];
  const parsed = JSON.parse(stdout) as { loopdevices?: Array<{ name?: unknown; 'back-file'?: unknown; ro?: unknown }> };
  return (parsed.loopdevices ?? []).flatMap((d) => {
    if (typeof d.name !== 'string') return [];
    const backFile = typeof d['back-file'] === 'string' ? d['back-file'].replace(/ \(deleted\)$/, '') : undefined;
    // Older util-linux prints booleans as "0"/"1".
    const readOnly = d.ro === true || d.ro === 1 || d.ro === '1';
    return [{ name: d.name, backFile, readOnly }];
  });
}

export function losetupList(): Command<LoopDevice[]> {
  return {
    program: LOSETUP,
    args: ['--list', '--json', '--output', 'NAME,BACK-FILE,RO'],
    parse: (stdout) => parseLosetupList(stdout),
    mapError: execErrorFromResult,
    timeoutMs: 10_000,
  };
}

/** `losetup --find --show [--read-only] FILE` → the new /dev/loopN. */
export function losetupAttach(file: string, options: { readOnly: boolean }): Command<string> {
  if (!isAbsolute(file)) throw new InvalidArgumentError(`path must be absolute: ${JSON.stringify(file)}`);
  return {
    program: LOSETUP,
    args: ['--find', '--show', ...(options.readOnly ? ['--read-only'] : []), file],
    parse: (stdout) => {
      const device = stdout.trim();
      if (!LOOP_DEVICE.test(device)) throw new Error('losetup --show printed no loop device');
      return device;
    },
    mapError: (result) => (/No such file or directory/i.test(result.stderr) ? new NotFoundError('file to attach not found', { cause: execErrorFromResult(result) }) : execErrorFromResult(result)),
    timeoutMs: 10_000,
  };
}

/** `losetup --detach /dev/loopN`; a device that is not attached is a NotFoundError. */
export function losetupDetach(device: string): Command<void> {
  checkLoopDevice(device);
  return {
    program: LOSETUP,
    args: ['--detach', device],
    parse: () => undefined,
    mapError: (result) => (/No such device|No such file or directory/i.test(result.stderr) ? new NotFoundError(`${device} is not attached`, { cause: execErrorFromResult(result) }) : execErrorFromResult(result)),
    timeoutMs: 10_000,
  };
}

export interface SnapshotSpec {
  name: string;
  uuid: string;
  originDevice: string;
  cowDevice: string;
  /** Size of the origin in 512-byte sectors. */
  sectors: number;
  chunkSectors?: number;
}

/** The device-mapper table line of a persistent snapshot. */
export function snapshotTable(spec: Pick<SnapshotSpec, 'originDevice' | 'cowDevice' | 'sectors' | 'chunkSectors'>): string {
  checkLoopDevice(spec.originDevice);
  checkLoopDevice(spec.cowDevice);
  if (!Number.isSafeInteger(spec.sectors) || spec.sectors <= 0) throw new InvalidArgumentError('snapshot size must be a positive number of sectors');
  return `0 ${spec.sectors} snapshot ${spec.originDevice} ${spec.cowDevice} P ${spec.chunkSectors ?? DEFAULT_CHUNK_SECTORS}`;
}

/** `dmsetup create NAME --uuid UUID --table TABLE` (the table is one argv element: dmsetup's syntax, no shell). */
export function dmsetupCreateSnapshot(spec: SnapshotSpec): Command<void> {
  checkDmName(spec.name);
  if (!spec.uuid.startsWith(DM_UUID_PREFIX) || spec.uuid.length > 128) throw new InvalidArgumentError('dm uuid must start with CORRAL-');
  return {
    program: DMSETUP,
    args: ['create', spec.name, '--uuid', spec.uuid, '--table', snapshotTable(spec)],
    parse: () => undefined,
    mapError: execErrorFromResult,
    timeoutMs: 30_000,
  };
}

/** `dmsetup remove --retry NAME`; a device that does not exist is a NotFoundError. */
export function dmsetupRemove(name: string): Command<void> {
  checkDmName(name);
  return {
    program: DMSETUP,
    args: ['remove', '--retry', name],
    parse: () => undefined,
    mapError: (result) => (/not found|No such device/i.test(result.stderr) ? new NotFoundError(`device-mapper device ${name} not found`, { cause: execErrorFromResult(result) }) : execErrorFromResult(result)),
    timeoutMs: 30_000,
  };
}

export interface DmDevice {
  name: string;
  uuid: string;
}

/** Reads `dmsetup info -c --noheadings -o name,uuid --separator '\t'`. */
export function parseDmsetupInfo(stdout: string): DmDevice[] {
  return stdout
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && line !== 'No devices found')
    .map((line) => {
      const [name, uuid = ''] = line.split('\t');
      return { name, uuid };
    });
}

export function dmsetupInfo(): Command<DmDevice[]> {
  return {
    program: DMSETUP,
    args: ['info', '-c', '--noheadings', '-o', 'name,uuid', '--separator', '\t'],
    parse: (stdout) => parseDmsetupInfo(stdout),
    mapError: execErrorFromResult,
    timeoutMs: 10_000,
  };
}

/** The device-mapper name and uuid of a workload's snapshot. Names are capped at 127 bytes. */
export function dmIdentity(workloadId: string): { name: string; uuid: string } {
  const digest = createHash('sha256').update(workloadId).digest('hex');
  const plain = `corral-${workloadId}`;
  return { name: plain.length <= 127 ? plain : `corral-${digest.slice(0, 40)}`, uuid: `${DM_UUID_PREFIX}${digest.slice(0, 32)}` };
}

function checkLoopDevice(device: string): void {
  if (!LOOP_DEVICE.test(device)) throw new InvalidArgumentError(`not a loop device: ${JSON.stringify(device)}`);
}

function checkDmName(name: string): void {
  if (!DM_NAME.test(name)) throw new InvalidArgumentError(`not a device-mapper name Corral makes: ${JSON.stringify(name)}`);
}

/** True for the NotFoundError the mappers above return. */
export function isNotFound(err: unknown): boolean {
  return err instanceof NotFoundError;
}
