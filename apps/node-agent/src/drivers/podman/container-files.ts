import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '@corral/domain';
import { execErrorFromResult, type Command, type ExecResult } from '@corral/exec';
import type { FileEntry, FileKind } from '../driver';
import { DEFAULT_PODMAN_CLI, mapPodmanError, podmanMessage, type PodmanCli } from './commands';

// Files inside a container, with nothing required of its image but `mv`
// (for the atomic rename) and `ls` (for listings):
//
// - read: `podman cp CTR:PATH -` streams a tar of the path; the one file in
//   it is streamed on without ever being held whole.
// - write: the upload is spooled to a private file on the host first (so an
//   oversized or broken upload never touches the container), sent as a
//   one-entry tar with `podman cp - CTR:DIR` under a temporary name, then
//   renamed over the target with `mv -f -T` inside the container: readers
//   see the old content or the new, never a part (podman cp alone truncates
//   the existing file in place).
// - list: `ls -lnA --full-time -- DIR/` inside the container, parsed.
//
// Confinement: paths are checked lexically first (absolute, no `..`), and
// everything is then resolved by podman (securejoin) or by the kernel inside
// the container's own mount namespace, so a symlink, whatever it points at,
// resolves inside the container's root and never reaches the host's files.

export const UPLOAD_PREFIX = '.corral-upload-';

export function podmanCpOutArgs(ref: string, path: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): string[] {
  return [...cli.globalArgs, 'cp', '--', `${ref}:${path}`, '-'];
}

export function podmanCpInArgs(ref: string, dir: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): string[] {
  return [...cli.globalArgs, 'cp', '--', '-', `${ref}:${dir}`];
}

/** podman cp's failures: a missing path is NotFound; a podman-level failure as mapPodmanError. */
export function mapCpError(result: Pick<ExecResult, 'stderr' | 'exitCode'> & Partial<ExecResult>, ref: string, path: string): Error {
  if (/could not be found|no such file or directory|not a directory|destination must be a directory/i.test(result.stderr) && !/no such container/i.test(result.stderr)) {
    return new NotFoundError(`${path} does not exist in the workload`, { field: 'path' });
  }
  if (/container .* does not exist/i.test(result.stderr)) return new NotFoundError(`container ${ref} not found`);
  return mapPodmanError({ program: 'podman', signal: null, stdout: '', durationMs: 0, ...result }, ref);
}

/** `mv -f -T TMP PATH` inside the container: the atomic step of a write. */
export function podmanRenameInside(ref: string, from: string, to: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<void> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'exec', '--', ref, 'mv', '-f', '-T', '--', from, to],
    timeoutMs: 30_000,
    parse: () => undefined,
    mapError: (result) => mapInsideError(result, ref, to, 'mv'),
  };
}

export function podmanRemoveInside(ref: string, path: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<void> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'exec', '--', ref, 'rm', '-f', '--', path],
    timeoutMs: 30_000,
    parse: () => undefined,
    mapError: (result) => mapInsideError(result, ref, path, 'rm'),
  };
}

export function podmanListDirectory(ref: string, path: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<FileEntry[]> {
  // The trailing slash makes ls list a directory (also through a symlink)
  // and fail on anything else instead of describing it.
  const target = path === '/' ? '/' : `${path}/`;
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'exec', '--env', 'LC_ALL=C', '--env', 'TZ=UTC', '--', ref, 'ls', '-lnA', '--full-time', '--', target],
    timeoutMs: 30_000,
    parse: (stdout) => parseLsLong(stdout),
    mapError: (result) => mapInsideError(result, ref, path, 'ls'),
  };
}

/** Errors of a tool run inside the container for the files capability. */
export function mapInsideError(result: ExecResult, ref: string, path: string, tool: string): Error {
  const stderr = result.stderr;
  if (/executable file not found|no such file or directory: OCI|command not found/i.test(stderr) && /exec|OCI|runtime/i.test(stderr)) {
    return new FailedPreconditionError(`the workload's image has no ${tool}, which this file operation needs`, { cause: execErrorFromResult(result) });
  }
  if (/not a directory/i.test(stderr)) return new InvalidArgumentError(`${path} is not a directory`, { field: 'path' });
  if (/is a directory|cannot overwrite directory|refusing|Directory not empty/i.test(stderr)) return new InvalidArgumentError(`${path} is a directory`, { field: 'path' });
  if (/no such file or directory|can't stat|cannot access|can't open/i.test(stderr)) return new NotFoundError(`${path} does not exist in the workload`, { field: 'path' });
  if (/^Error: /m.test(stderr)) return mapPodmanError(result, ref);
  if (/permission denied|read-only file system/i.test(stderr)) return new FailedPreconditionError(`${path} cannot be written: ${podmanMessage(stderr) || 'permission denied'}`);
  return execErrorFromResult(result);
}

// --- ls -ln --full-time --------------------------------------------------------

// busybox: `-rw-r--r--    1 0   0   13 2023-11-14 22:13:20 +0000 name`
// GNU:     `-rw-r--r-- 1 0 0 13 2023-11-14 22:13:20.123456789 +0000 name`
// Devices show "major, minor" where the size goes.
const LS_LINE = /^([-dlcbps])([-rwxsStT]{9})\S*\s+\d+\s+\d+\s+\d+\s+(\d+|\d+,\s*\d+)\s+(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.\d+)? ([+-]\d{4}) (.*)$/;

export function parseLsLong(stdout: string): FileEntry[] {
  const entries: FileEntry[] = [];
  for (const line of stdout.split('\n')) {
    if (line === '' || line.startsWith('total ')) continue;
    const m = LS_LINE.exec(line);
    if (!m) continue;
    const [, type, perms, size, day, time, zone, rest] = m;
    const kind = kindOf(type);
    // "name -> target" for symlinks: the name is what precedes the arrow.
    const name = kind === 'symlink' && rest.includes(' -> ') ? rest.slice(0, rest.indexOf(' -> ')) : rest;
    const iso = `${day}T${time}${zone.slice(0, 3)}:${zone.slice(3)}`;
    entries.push({ name, kind, sizeBytes: size.includes(',') ? 0 : Number(size), mode: modeBits(perms), modifiedAt: new Date(iso) });
  }
  return entries;
}

function kindOf(type: string): FileKind {
  if (type === '-') return 'file';
  if (type === 'd') return 'directory';
  if (type === 'l') return 'symlink';
  return 'other';
}

/** "rwxr-sr-T" → 0o3754 (permission bits with setuid/setgid/sticky). */
export function modeBits(perms: string): number {
  let mode = 0;
  const special = [0o4000, 0o2000, 0o1000];
  for (let group = 0; group < 3; group++) {
    const [r, w, x] = perms.slice(group * 3, group * 3 + 3);
    const shift = (2 - group) * 3;
    if (r === 'r') mode |= 4 << shift;
    if (w === 'w') mode |= 2 << shift;
    if (x === 'x' || x === 's' || x === 't') mode |= 1 << shift;
    if (x === 's' || x === 'S' || x === 't' || x === 'T') mode |= special[group];
  }
  return mode;
}

// --- tar (ustar) -----------------------------------------------------------------

const BLOCK = 512;
/** ustar's size field holds 11 octal digits. */
export const MAX_TAR_FILE_BYTES = 8 * 1024 ** 3 - 1;

/** The ustar header of one regular file. */
export function tarFileHeader(name: string, size: number, mode: number, mtimeSeconds = Math.floor(Date.now() / 1000)): Buffer {
  if (Buffer.byteLength(name) > 100 || name.includes('/')) throw new InvalidArgumentError('file name too long for an upload', { field: 'path' });
  if (size > MAX_TAR_FILE_BYTES) throw new InvalidArgumentError('file too large for an upload', { field: 'path' });
  const header = Buffer.alloc(BLOCK);
  const put = (offset: number, length: number, value: string) => Buffer.from(value, 'utf8').copy(header, offset, 0, length);
  const octal = (offset: number, length: number, value: number) => put(offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
  put(0, 100, name);
  octal(100, 8, mode & 0o7777);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, mtimeSeconds);
  header.fill(0x20, 148, 156); // checksum counted as spaces
  put(156, 1, '0');
  put(257, 6, 'ustar\0');
  put(263, 2, '00');
  let sum = 0;
  for (const byte of header) sum += byte;
  put(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return header;
}

/** What follows a file's content: padding to a block, then the two zero blocks that end an archive. */
export function tarTrailer(size: number): Buffer {
  const pad = (BLOCK - (size % BLOCK)) % BLOCK;
  return Buffer.alloc(pad + 2 * BLOCK);
}

export interface TarHeader {
  name: string;
  type: string;
  size: number;
}

export function parseTarHeader(block: Buffer): TarHeader | undefined {
  if (block.every((b) => b === 0)) return undefined;
  const text = (offset: number, length: number) => {
    const raw = block.subarray(offset, offset + length);
    const end = raw.indexOf(0);
    return raw.subarray(0, end < 0 ? length : end).toString('utf8');
  };
  let size: number;
  if (block[124] & 0x80) {
    // base-256 (GNU) for sizes past 8 GiB
    size = 0;
    for (let i = 125; i < 136; i++) size = size * 256 + block[i];
  } else {
    size = parseInt(text(124, 12).trim() || '0', 8);
  }
  const prefix = text(345, 155);
  const name = text(0, 100);
  return { name: prefix ? `${prefix}/${name}` : name, type: text(156, 1) || '0', size };
}

/** Reads exact byte counts from a stream of chunks. */
export class ByteReader {
  private buffered: Buffer[] = [];
  private size = 0;
  private done = false;

  constructor(private readonly source: AsyncIterator<Buffer>) {}

  /** Exactly n bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    while (this.size < n && !this.done) await this.pull();
    return this.take(Math.min(n, this.size));
  }

  /** Up to n bytes in chunks as they arrive. */
  async *stream(n: number): AsyncGenerator<Buffer, void, undefined> {
    let left = n;
    while (left > 0) {
      if (this.size === 0) {
        if (this.done) throw new Error('stream ended early');
        await this.pull();
        continue;
      }
      const chunk = this.take(Math.min(left, this.size));
      left -= chunk.length;
      yield chunk;
    }
  }

  private async pull(): Promise<void> {
    const next = await this.source.next();
    if (next.done) this.done = true;
    else {
      this.buffered.push(next.value);
      this.size += next.value.length;
    }
  }

  private take(n: number): Buffer {
    const all = this.buffered.length === 1 ? this.buffered[0] : Buffer.concat(this.buffered);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.buffered = rest.length ? [rest] : [];
    this.size = rest.length;
    return out;
  }
}

export type TarFirstEntry = { kind: 'file'; size: number; body: AsyncGenerator<Buffer, void, undefined> } | { kind: 'directory' | 'other' } | { kind: 'empty' };

/** The first real entry of a tar stream (extended headers skipped) and, for a file, its content as a stream. */
export async function firstTarEntry(reader: ByteReader): Promise<TarFirstEntry> {
  for (;;) {
    const block = await reader.read(BLOCK);
    if (block.length < BLOCK) return { kind: 'empty' };
    const header = parseTarHeader(block);
    if (!header) return { kind: 'empty' };
    const padded = header.size + ((BLOCK - (header.size % BLOCK)) % BLOCK);
    if (header.type === 'x' || header.type === 'g' || header.type === 'L' || header.type === 'K') {
      await reader.read(padded);
      continue;
    }
    if (header.type === '0' || header.type === '7') return { kind: 'file', size: header.size, body: reader.stream(header.size) };
    if (header.type === '5') return { kind: 'directory' };
    return { kind: 'other' };
  }
}
