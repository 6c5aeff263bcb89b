import { isAbsolute } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '@corral/domain';
import { execErrorFromResult, type Command, type ExecResult } from '@corral/exec';
import type { DiskFormat } from './volume-manager';

// qemu-img calls as data (DESIGN §3): argv, a parser, an error mapper.
// Every path is absolute, so none can be read as an option.

export const QEMU_IMG = 'qemu-img';

export interface QemuImgInfo {
  /** As qemu-img names it: raw, qcow2, vmdk... */
  format: string;
  virtualBytes: number;
  /** Host bytes allocated to the file, when qemu-img could tell. */
  actualBytes: number | undefined;
  /** The backing file as recorded in the image (may be relative to it). */
  backingFile: string | undefined;
  /** The backing file resolved to a path. */
  fullBackingFile: string | undefined;
  backingFormat: string | undefined;
}

/** Reads `qemu-img info --output=json`. */
export function parseQemuImgInfo(stdout: string): QemuImgInfo {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(stdout) as Record<string, unknown>;
  } catch (err) {
    throw new Error('qemu-img info printed something other than JSON', { cause: err });
  }
  if (typeof raw !== 'object' || raw === null || typeof raw.format !== 'string' || typeof raw['virtual-size'] !== 'number') {
    throw new Error('qemu-img info output lacks format or virtual-size');
  }
  const str = (key: string) => (typeof raw[key] === 'string' ? (raw[key] as string) : undefined);
  return {
    format: raw.format,
    virtualBytes: raw['virtual-size'],
    actualBytes: typeof raw['actual-size'] === 'number' ? raw['actual-size'] : undefined,
    backingFile: str('backing-filename'),
    fullBackingFile: str('full-backing-filename'),
    backingFormat: str('backing-filename-format'),
  };
}

/** A format a base or clone may have, or an InvalidArgumentError. */
export function diskFormatOf(format: string, field = 'imagePath'): DiskFormat {
  if (format === 'raw' || format === 'qcow2') return format;
  throw new InvalidArgumentError(`unsupported image format ${JSON.stringify(format)}: use raw or qcow2`, { field });
}

/** `qemu-img info --output=json [-f FMT] PATH` */
export function qemuImgInfo(path: string, options: { format?: DiskFormat } = {}): Command<QemuImgInfo> {
  return {
    program: QEMU_IMG,
    args: ['info', '--output=json', ...(options.format ? ['-f', options.format] : []), absolute(path)],
    parse: (stdout) => parseQemuImgInfo(stdout),
    mapError: (result) => mapQemuImgError(result),
    timeoutMs: 30_000,
  };
}

/** `qemu-img create -q -f qcow2 -b BASE -F FMT CLONE`: an overlay that reads through to BASE. Instant at any base size. */
export function qemuImgCreateOverlay(spec: { basePath: string; baseFormat: DiskFormat; clonePath: string }): Command<void> {
  return {
    program: QEMU_IMG,
    args: ['create', '-q', '-f', 'qcow2', '-b', absolute(spec.basePath), '-F', spec.baseFormat, absolute(spec.clonePath)],
    parse: () => undefined,
    mapError: (result) => mapQemuImgError(result),
    timeoutMs: 30_000,
  };
}

/**
 * `qemu-img rebase -q -f qcow2 -b "" CLONE`: copies every cluster the clone
 * reads from its backing file into it and drops the backing file. Takes as
 * long as copying the disk; qemu-img refuses while a VM has the disk open.
 */
export function qemuImgFlatten(clonePath: string, timeoutMs = 60 * 60_000): Command<void> {
  return {
    program: QEMU_IMG,
    args: ['rebase', '-q', '-f', 'qcow2', '-b', '', absolute(clonePath)],
    parse: () => undefined,
    mapError: (result) => mapQemuImgError(result),
    timeoutMs,
  };
}

/**
 * Missing files become NotFoundError, a disk locked by a running qemu a
 * FailedPreconditionError; anything else stays an ExecError (INTERNAL), so
 * qemu-img's text never reaches a client.
 */
export function mapQemuImgError(result: ExecResult): Error {
  const cause = execErrorFromResult(result);
  if (/No such file or directory/i.test(result.stderr)) return new NotFoundError('disk image not found', { cause });
  if (/Failed to get .*lock/i.test(result.stderr)) return new FailedPreconditionError('disk image is in use by a running VM', { cause });
  return cause;
}

function absolute(path: string): string {
  if (!isAbsolute(path)) throw new InvalidArgumentError(`path must be absolute: ${JSON.stringify(path)}`);
  return path;
}
