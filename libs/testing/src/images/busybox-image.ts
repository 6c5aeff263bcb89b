import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createExecutor, execErrorFromResult, resolveProgram, type Command, type Executor } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { describeIfAvailable } from '../describe-if-available';

// A container image for podman tests, made on the machine itself (no
// registry is reachable): a rootfs of busybox-static with applet symlinks and
// a page for `httpd -f -p 8080 -h /www`, written as a ustar archive here and
// `podman import`ed once. The image is labelled with the archive's hash, so
// later runs reuse it and a changed recipe (or busybox) replaces it.

export const BUSYBOX_TEST_IMAGE = 'localhost/corral-busybox:test';
export const BUSYBOX_INDEX_HTML = '<!doctype html><title>corral</title><h1>hello from corral-busybox</h1>\n';
export const DEFAULT_BUSYBOX_PATH = '/bin/busybox';
const HASH_LABEL = 'corral.rootfs-sha256';

/** Applets linked into /bin; busybox picks the applet from argv[0]. */
export const BUSYBOX_APPLETS = [
  'sh', 'ash', 'httpd', 'sleep', 'echo', 'cat', 'ls', 'env', 'true', 'false', 'kill', 'ps', 'printf', 'test', '[',
  'mkdir', 'mv', 'rm', 'touch', 'grep', 'sed', 'head', 'tail', 'wc', 'date', 'hostname', 'id', 'uname', 'wget', 'nc', 'yes', 'seq', 'timeout',
];

// --- ustar ------------------------------------------------------------------------

export type TarEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string };

const BLOCK = 512;
/** A fixed mtime keeps the archive, and so its hash, reproducible. */
const MTIME = 1_700_000_000;

function writeString(header: Buffer, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > length) throw new Error(`tar field too long: ${value}`);
  bytes.copy(header, offset);
}

function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  // length-1 octal digits, then NUL.
  writeString(header, offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
}

function tarHeader(path: string, typeflag: string, mode: number, size: number, linkname = ''): Buffer {
  const header = Buffer.alloc(BLOCK);
  let name = path;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100) throw new Error(`tar path too long: ${path}`);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  writeString(header, 0, 100, name);
  writeOctal(header, 100, 8, mode);
  writeOctal(header, 108, 8, 0); // uid
  writeOctal(header, 116, 8, 0); // gid
  writeOctal(header, 124, 12, size);
  writeOctal(header, 136, 12, MTIME);
  header.fill(0x20, 148, 156); // checksum counts as spaces while summing
  writeString(header, 156, 1, typeflag);
  writeString(header, 157, 100, linkname);
  writeString(header, 257, 6, 'ustar\0');
  writeString(header, 263, 2, '00');
  writeString(header, 265, 32, 'root');
  writeString(header, 297, 32, 'root');
  writeString(header, 345, 155, prefix);
  let sum = 0;
  for (const byte of header) sum += byte;
  writeString(header, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return header;
}

/** A POSIX ustar archive of `entries`, in order (paths relative, no leading slash). */
export function writeTar(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const path = entry.path.replace(/^\/+/, '');
    if (entry.type === 'dir') {
      parts.push(tarHeader(path.endsWith('/') ? path : `${path}/`, '5', entry.mode ?? 0o755, 0));
    } else if (entry.type === 'symlink') {
      parts.push(tarHeader(path, '2', 0o777, 0, entry.target));
    } else {
      parts.push(tarHeader(path, '0', entry.mode ?? 0o644, entry.data.length), entry.data);
      const pad = (BLOCK - (entry.data.length % BLOCK)) % BLOCK;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

// --- the rootfs ---------------------------------------------------------------------

/** Whether an ELF binary has no program interpreter (so it runs with no libc in the image). */
export function isStaticElf(binary: Buffer): boolean {
  if (binary.length < 64 || binary.readUInt32BE(0) !== 0x7f454c46) return false;
  const is64 = binary[4] === 2;
  const little = binary[5] === 1;
  const u16 = (o: number) => (little ? binary.readUInt16LE(o) : binary.readUInt16BE(o));
  const u32 = (o: number) => (little ? binary.readUInt32LE(o) : binary.readUInt32BE(o));
  const phoff = is64 ? Number(little ? binary.readBigUInt64LE(32) : binary.readBigUInt64BE(32)) : u32(28);
  const phentsize = u16(is64 ? 54 : 42);
  const phnum = u16(is64 ? 56 : 44);
  for (let i = 0; i < phnum; i++) {
    const offset = phoff + i * phentsize;
    if (offset + 4 > binary.length) return false;
    if (u32(offset) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

/** The image's root filesystem as a tarball: /bin/busybox, applet links, /www/index.html and the usual directories. */
export function buildBusyboxRootfsTar(busyboxPath = DEFAULT_BUSYBOX_PATH): Buffer {
  const busybox = readFileSync(busyboxPath);
  if (!isStaticElf(busybox)) throw new Error(`${busyboxPath} is not a static binary: install the busybox-static package`);
  return writeTar([
    ...['bin', 'dev', 'etc', 'proc', 'sys', 'root', 'var', 'run', 'www'].map((path): TarEntry => ({ type: 'dir', path })),
    { type: 'dir', path: 'tmp', mode: 0o1777 },
    { type: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    ...BUSYBOX_APPLETS.map((applet): TarEntry => ({ type: 'symlink', path: `bin/${applet}`, target: 'busybox' })),
    { type: 'file', path: 'etc/passwd', data: Buffer.from('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n') },
    { type: 'file', path: 'etc/group', data: Buffer.from('root:x:0:\nnogroup:x:65534:\n') },
    { type: 'file', path: 'www/index.html', data: Buffer.from(BUSYBOX_INDEX_HTML) },
  ]);
}

// --- podman ----------------------------------------------------------------------------

/** Why podman tests cannot run here, or undefined when they can. */
export function podmanUnavailableReason(busyboxPath = DEFAULT_BUSYBOX_PATH): string | undefined {
  if (!resolveProgram('podman', process.env.PATH)) return 'podman is not installed (Debian packages: podman runc busybox-static)';
  try {
    if (!isStaticElf(readFileSync(busyboxPath))) return `${busyboxPath} is not static (Debian package: busybox-static)`;
  } catch {
    return `${busyboxPath} is missing (Debian package: busybox-static)`;
  }
  return undefined;
}

/** `describe` when podman and busybox-static are installed; `describe.skip`, with the reason printed, otherwise. */
export function describeWithPodman(name: string, fn: () => void): void {
  describeIfAvailable(name, podmanUnavailableReason(), fn);
}

/** The image's rootfs hash label; undefined when there is no such image. */
function imageHashLabel(ref: string): Command<string | undefined> {
  return {
    program: 'podman',
    args: ['image', 'inspect', '--format', '{{json .Labels}}', '--', ref],
    parse: (stdout) => {
      const labels: unknown = JSON.parse(stdout.trim() || 'null');
      const value = labels && typeof labels === 'object' ? (labels as Record<string, unknown>)[HASH_LABEL] : undefined;
      return typeof value === 'string' ? value : '';
    },
    // "image not known" is the answer, not a failure.
    mapError: (result) => (/image not known|no such image|failed to find image/i.test(result.stderr) ? new ImageMissing() : execErrorFromResult(result)),
  };
}

class ImageMissing extends Error {}

function importFromStdin(tar: Buffer, ref: string, hash: string): Command<string> {
  return {
    program: 'podman',
    args: ['import', '--quiet', '--change', `LABEL ${HASH_LABEL}=${hash}`, '--change', 'CMD ["/bin/sh"]', '-', ref],
    stdin: tar,
    timeoutMs: 120_000,
    parse: (stdout) => stdout.trim(),
    mapError: (result) => execErrorFromResult(result),
  };
}

export interface EnsureBusyboxImageOptions {
  busyboxPath?: string;
  /** Must allow `podman`. Default: one that allows only podman. */
  executor?: Executor;
}

const ensured = new Map<string, Promise<string>>();

/**
 * Makes sure podman has the busybox test image `ref` (importing it when it is
 * missing or was built from a different rootfs) and returns `ref`.
 */
export function ensureBusyboxImage(ref = BUSYBOX_TEST_IMAGE, options: EnsureBusyboxImageOptions = {}): Promise<string> {
  const key = `${ref}\0${options.busyboxPath ?? DEFAULT_BUSYBOX_PATH}`;
  let pending = ensured.get(key);
  if (!pending) {
    pending = buildAndImport(ref, options);
    ensured.set(key, pending);
    pending.catch(() => ensured.delete(key));
  }
  return pending;
}

async function buildAndImport(ref: string, options: EnsureBusyboxImageOptions): Promise<string> {
  const executor = options.executor ?? createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
  const tar = buildBusyboxRootfsTar(options.busyboxPath);
  const hash = createHash('sha256').update(tar).digest('hex');
  let existing: string | undefined;
  try {
    existing = await executor.run(imageHashLabel(ref));
  } catch (err) {
    if (!(err instanceof ImageMissing)) throw err;
  }
  if (existing !== hash) await executor.run(importFromStdin(tar, ref, hash));
  return ref;
}
