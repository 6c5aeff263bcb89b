import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, NotFoundError, PermissionDeniedError, ResourceExhaustedError, UnavailableError } from '@corral/domain';
import type { ExecOptions, ExecOutcome, FileEntry, FileKind, WriteFileOptions } from '../driver';
import { checkSandboxPath } from '../sandbox-path';
import { QgaCommandError, type QgaClient } from './qga-client';

// Exec and files inside a VM, built from guest agent commands: guest-exec
// (+ guest-exec-status polling) and guest-file-open/read/write/close, plus a
// few standard programs run in the guest (stat, find, chmod, mv, rm, kill)
// for what the agent has no command of its own. Every step runs in its own
// short agent session (`Sessions`), so one long command or a slow upload
// never holds the VM's agent channel: other calls interleave between steps.
// Agent-side state (exec pids, open file handles) outlives sessions.

/** Runs `fn` in a fresh, resynced agent session (the driver serializes them per VM and maps connection failures). */
export type Sessions = <T>(fn: (qga: QgaClient) => Promise<T>) => Promise<T>;

export interface GuestOpsOptions {
  /** Bytes per guest-file-read / guest-file-write (base64 makes each line 4/3 of it). Default 512 KiB. */
  chunkBytes?: number;
  /** Longest pause between two guest-exec-status polls. Default 250 ms. */
  maxPollIntervalMs?: number;
}

const DEFAULT_CHUNK_BYTES = 512 * 1024;
/** What shells (and podman exec) report for a command that cannot be found or run. */
const EXIT_NOT_RUNNABLE = 127;
/** Guest commands the driver itself runs; each is short. */
const HELPER_TIMEOUT_MS = 30_000;

/**
 * A path inside the VM: the agent-wide sandbox path rules (absolute, no
 * `..` segment, bounded; see ../sandbox-path.ts), plus no control
 * characters, which the listing parser could not tell from record breaks.
 * The VM is its own filesystem, so nothing outside can be reached anyway;
 * this keeps requests unambiguous and their audit trail honest.
 */
export function checkGuestPath(path: unknown, field = 'path'): string {
  const normal = checkSandboxPath(path as string, field);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(normal)) throw new InvalidArgumentError('path must not contain control characters', { field });
  return normal;
}

export function checkArgv(argv: readonly string[]): void {
  if (!Array.isArray(argv) || argv.length === 0) throw new InvalidArgumentError('exec needs a command', { field: 'argv' });
  argv.forEach((arg, i) => {
    if (typeof arg !== 'string' || arg.includes('\0')) throw new InvalidArgumentError('arguments must be strings without NUL bytes', { field: `argv[${i}]` });
  });
  if (argv[0] === '') throw new InvalidArgumentError('the command must not be empty', { field: 'argv[0]' });
}

interface ExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  'out-data'?: string;
  'err-data'?: string;
  'out-truncated'?: boolean;
  'err-truncated'?: boolean;
}

/**
 * Runs argv in the guest (PATH lookup by the agent), stdin given up front,
 * output captured by the agent (which keeps at most 16 MiB of each), and
 * polls until it exits or the deadline passes; then the command is killed
 * (best effort) and DeadlineExceededError thrown. A command that cannot be
 * started ends with exit code 127, as under a shell or `podman exec`.
 */
export async function guestExec(sessions: Sessions, argv: readonly string[], options: ExecOptions, opts: GuestOpsOptions = {}): Promise<ExecOutcome> {
  checkArgv(argv);
  if (!Number.isFinite(options.timeoutMs) || options.timeoutMs <= 0) throw new InvalidArgumentError('timeoutMs must be a positive number', { field: 'timeoutMs' });
  const deadline = Date.now() + options.timeoutMs;
  const args: Record<string, unknown> = { path: argv[0], arg: argv.slice(1), 'capture-output': true };
  if (options.stdin !== undefined) args['input-data'] = Buffer.from(options.stdin).toString('base64');
  let pid: number;
  try {
    pid = (await sessions((qga) => qga.execute<{ pid: number }>('guest-exec', args))).pid;
  } catch (err) {
    if (err instanceof QgaCommandError && /Failed to execute child process/i.test(err.desc)) {
      return { exitCode: EXIT_NOT_RUNNABLE, stdout: '', stderr: `${argv[0]}: ${spawnFailureReason(err.desc)}\n` };
    }
    throw mapAgentError(err);
  }
  const maxInterval = opts.maxPollIntervalMs ?? 250;
  for (let interval = 10; ; interval = Math.min(maxInterval, interval * 2)) {
    const status = await sessions((qga) => qga.execute<ExecStatus>('guest-exec-status', { pid })).catch((err) => {
      throw mapAgentError(err);
    });
    if (status.exited) {
      const exitCode = status.exitcode ?? (status.signal !== undefined ? 128 + status.signal : -1);
      let stderr = decodeBase64(status['err-data']);
      if (status['out-truncated'] || status['err-truncated']) stderr += '\n[output truncated by the guest agent]\n';
      return { exitCode, stdout: decodeBase64(status['out-data']), stderr };
    }
    if (Date.now() >= deadline) {
      // Waited for, so the command is gone when this rejects.
      await sessions((qga) => runHelper(qga, ['kill', '-KILL', String(pid)])).catch(() => undefined);
      throw new DeadlineExceededError(`the command did not finish within ${options.timeoutMs} ms`);
    }
    await sleep(Math.min(interval, Math.max(0, deadline - Date.now())));
  }
}

interface ReadResult {
  count: number;
  'buf-b64': string;
  eof: boolean;
}

/**
 * The file's content as chunks. Opening (and the first read) happen before
 * this resolves, so a missing file or a directory is an error here, not in
 * the middle of the stream. Abandoning the iteration closes the handle.
 */
export async function guestReadFile(sessions: Sessions, rawPath: string, opts: GuestOpsOptions = {}): Promise<AsyncIterable<Buffer>> {
  const path = checkGuestPath(rawPath);
  const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const read = async (qga: QgaClient, handle: number) => {
    const result = await qga.execute<ReadResult>('guest-file-read', { handle, count: chunkBytes });
    return { data: Buffer.from(result['buf-b64'] ?? '', 'base64'), eof: result.eof || result.count === 0 };
  };
  const { handle, first } = await sessions(async (qga) => {
    const handle = await qga.execute<number>('guest-file-open', { path, mode: 'r' });
    try {
      const first = await read(qga, handle);
      if (first.eof) await qga.execute('guest-file-close', { handle });
      return { handle, first };
    } catch (err) {
      await qga.execute('guest-file-close', { handle }).catch(() => undefined);
      throw err;
    }
  }).catch((err) => {
    throw mapAgentError(err);
  });
  return (async function* chunks() {
    let chunk = first;
    // Closed already when the first read reached the end.
    let open = !chunk.eof;
    try {
      if (chunk.data.length) yield chunk.data;
      while (!chunk.eof) {
        chunk = await sessions((qga) => read(qga, handle)).catch((err) => {
          throw mapAgentError(err);
        });
        if (chunk.data.length) yield chunk.data;
      }
      if (open) await sessions((qga) => qga.execute('guest-file-close', { handle }));
      open = false;
    } finally {
      if (open) await sessions((qga) => qga.execute('guest-file-close', { handle })).catch(() => undefined);
    }
  })();
}

/**
 * Writes through a temporary file beside the target (made private before
 * any byte lands in it, then given its mode), renamed over the target once
 * complete: a failed or oversized write leaves the previous content. The
 * mode is the one asked for, else the existing file's, else 0644.
 */
export async function guestWriteFile(sessions: Sessions, rawPath: string, content: AsyncIterable<Buffer>, options: WriteFileOptions, opts: GuestOpsOptions = {}): Promise<{ bytes: number }> {
  const path = checkGuestPath(rawPath);
  if (path === '/') throw new InvalidArgumentError('path is a directory', { field: 'path' });
  if (!Number.isInteger(options.maxBytes) || options.maxBytes < 0) throw new InvalidArgumentError('maxBytes must be a whole number of bytes', { field: 'maxBytes' });
  if (options.mode !== undefined && (!Number.isInteger(options.mode) || options.mode < 0 || options.mode > 0o7777)) {
    throw new InvalidArgumentError('mode must be permission bits (0 to 0o7777)', { field: 'mode' });
  }
  const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const existing = await statInGuest(sessions, path);
  if (existing?.kind === 'directory') throw new InvalidArgumentError('path is a directory', { field: 'path' });
  // A symlink's own bits (0777) say nothing about the file that replaces it.
  const mode = options.mode ?? (existing?.kind === 'file' ? existing.mode : undefined) ?? 0o644;
  const temp = tempPathFor(path);

  const handle = await sessions(async (qga) => {
    const handle = await qga.execute<number>('guest-file-open', { path: temp, mode: 'w' });
    // The agent creates files with 0666 & ~umask: narrow it before any content is written.
    const chmod = await runHelper(qga, ['chmod', (mode & 0o700).toString(8).padStart(3, '0'), temp]).catch((err: Error) => err);
    if (chmod instanceof Error || chmod.exitCode !== 0) {
      await qga.execute('guest-file-close', { handle }).catch(() => undefined);
      await runHelper(qga, ['rm', '-f', temp]).catch(() => undefined);
      if (chmod instanceof Error) throw chmod;
      throw new FailedPreconditionError(`chmod in the guest failed: ${chmod.stderr.trim()}`);
    }
    return handle;
  }).catch((err) => {
    throw mapAgentError(err);
  });

  let open = true;
  let published = false;
  try {
    let bytes = 0;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async () => {
      const data = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      const result = await sessions((qga) => qga.execute<{ count: number }>('guest-file-write', { handle, 'buf-b64': data.toString('base64') }));
      if (result.count !== data.length) throw new UnavailableError(`the guest wrote ${result.count} of ${data.length} bytes`);
    };
    for await (const chunk of content) {
      const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      bytes += buffer.length;
      if (bytes > options.maxBytes) throw new ResourceExhaustedError(`the file is larger than ${options.maxBytes} bytes`, { field: 'content' });
      for (let at = 0; at < buffer.length; ) {
        const piece = buffer.subarray(at, at + chunkBytes - pendingBytes);
        pending.push(piece);
        pendingBytes += piece.length;
        at += piece.length;
        if (pendingBytes >= chunkBytes) await flush();
      }
    }
    if (pendingBytes) await flush();
    await sessions(async (qga) => {
      await qga.execute('guest-file-close', { handle });
      open = false;
      const steps: string[][] = [];
      if ((mode & 0o7077) !== 0) steps.push(['chmod', mode.toString(8).padStart(3, '0'), temp]);
      // -T: a rename onto path itself, never "into" it (were path a symlink to a directory).
      steps.push(['mv', '-f', '-T', temp, path]);
      for (const argv of steps) {
        const outcome = await runHelper(qga, argv);
        if (outcome.exitCode !== 0) throw new FailedPreconditionError(`${argv[0]} in the guest failed: ${outcome.stderr.trim()}`);
      }
      published = true;
    });
    return { bytes };
  } catch (err) {
    throw mapAgentError(err);
  } finally {
    if (!published) {
      await sessions(async (qga) => {
        if (open) await qga.execute('guest-file-close', { handle }).catch(() => undefined);
        await runHelper(qga, ['rm', '-f', temp]);
      }).catch(() => undefined);
    }
  }
}

/** `find -H DIR -maxdepth 1 -exec stat -c '%f %s %Y %n' {} +`: the directory itself first, then its entries. */
export const LIST_FORMAT = '%f %s %Y %n';

export function listCommand(dir: string): string[] {
  return ['find', '-H', dir, '-maxdepth', '1', '-exec', 'stat', '-c', LIST_FORMAT, '{}', '+'];
}

/** The entries of a directory, sorted by name (symlinks are listed as links, not followed). */
export async function guestListDirectory(sessions: Sessions, rawPath: string): Promise<FileEntry[]> {
  const dir = checkGuestPath(rawPath);
  const outcome = await sessions((qga) => runHelper(qga, listCommand(dir))).catch((err) => {
    throw mapAgentError(err);
  });
  if (outcome.exitCode !== 0 && !outcome.stdout) throw guestCommandError(outcome.stderr, 'find');
  const records = parseStatRecords(outcome.stdout);
  const self = records.find((r) => r.path === dir);
  if (!self) throw new NotFoundError('no such directory in the VM', { field: 'path' });
  if (self.kind !== 'directory') {
    // find -H lists what a symlinked start point leads to, but stat reports the link itself.
    const target = self.kind === 'symlink' ? await statInGuest(sessions, dir, true) : self;
    if (target?.kind !== 'directory') throw new InvalidArgumentError('path is not a directory', { field: 'path' });
  }
  const prefix = dir === '/' ? '/' : `${dir}/`;
  return records
    .filter((r) => r !== self && r.path.startsWith(prefix) && r.path.length > prefix.length && !r.path.slice(prefix.length).includes('/'))
    .map(({ path, ...entry }) => ({ name: path.slice(prefix.length), ...entry }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

type StatRecord = Omit<FileEntry, 'name'> & { path: string };

/**
 * Lines of `stat -c '%f %s %Y %n'` (raw mode in hex, size, mtime, name).
 * The name comes last, so it may hold spaces; a line that does not start
 * like a record continues the previous name (a name with a newline).
 */
export function parseStatRecords(stdout: string): StatRecord[] {
  const records: StatRecord[] = [];
  const lines = stdout.endsWith('\n') ? stdout.slice(0, -1).split('\n') : stdout.split('\n');
  for (const line of lines) {
    const match = /^([0-9a-f]+) (\d+) (\d+) (.*)$/.exec(line);
    if (!match) {
      const last = records.at(-1);
      if (last) last.path += `\n${line}`;
      continue;
    }
    const raw = Number.parseInt(match[1], 16);
    records.push({ path: match[4], kind: kindOf(raw), sizeBytes: Number(match[2]), mode: raw & 0o7777, modifiedAt: new Date(Number(match[3]) * 1000) });
  }
  return records;
}

function kindOf(rawMode: number): FileKind {
  switch (rawMode & 0o170000) {
    case 0o040000:
      return 'directory';
    case 0o100000:
      return 'file';
    case 0o120000:
      return 'symlink';
    default:
      return 'other';
  }
}

/** What stat says about one path, or undefined when it does not exist. */
async function statInGuest(sessions: Sessions, path: string, follow = false): Promise<StatRecord | undefined> {
  const outcome = await sessions((qga) => runHelper(qga, ['stat', ...(follow ? ['-L'] : []), '-c', LIST_FORMAT, path])).catch((err) => {
    throw mapAgentError(err);
  });
  if (outcome.exitCode !== 0) {
    if (/No such file or directory/i.test(outcome.stderr)) return undefined;
    throw guestCommandError(outcome.stderr, 'stat');
  }
  return parseStatRecords(outcome.stdout)[0];
}

/** One short helper command inside a session already open: start it and poll it to the end. */
async function runHelper(qga: QgaClient, argv: string[]): Promise<ExecOutcome> {
  const { pid } = await qga.execute<{ pid: number }>('guest-exec', { path: argv[0], arg: argv.slice(1), 'capture-output': true });
  const deadline = Date.now() + HELPER_TIMEOUT_MS;
  for (let interval = 5; ; interval = Math.min(100, interval * 2)) {
    const status = await qga.execute<ExecStatus>('guest-exec-status', { pid });
    if (status.exited) return { exitCode: status.exitcode ?? -1, stdout: decodeBase64(status['out-data']), stderr: decodeBase64(status['err-data']) };
    if (Date.now() >= deadline) throw new DeadlineExceededError(`${argv[0]} in the guest did not finish in time`);
    await sleep(interval);
  }
}

function tempPathFor(path: string): string {
  const dir = posix.dirname(path);
  // NAME_MAX is 255 bytes: keep the temp name well inside it.
  const base = posix.basename(path).slice(0, 160);
  return posix.join(dir, `.${base}.corral-${randomBytes(6).toString('hex')}.tmp`);
}

/** Turns the agent's error text (an errno string from the guest) into the matching domain error. */
export function mapAgentError(err: unknown): Error {
  if (!(err instanceof QgaCommandError)) return err as Error;
  return guestCommandError(err.desc, undefined, err);
}

function guestCommandError(text: string, program?: string, cause?: unknown): Error {
  const what = program ? `${program} in the guest failed` : 'the guest agent refused';
  if (/No such file or directory/i.test(text)) return new NotFoundError('no such file or directory in the VM', { field: 'path', cause });
  if (/Is a directory/i.test(text)) return new InvalidArgumentError('path is a directory', { field: 'path', cause });
  if (/Not a directory/i.test(text)) return new InvalidArgumentError('a parent of path is not a directory', { field: 'path', cause });
  if (/Permission denied|Operation not permitted/i.test(text)) return new PermissionDeniedError('permission denied inside the VM', { field: 'path', cause });
  if (/No space left on device/i.test(text)) return new ResourceExhaustedError('no space left inside the VM', { cause });
  if (/Read-only file system/i.test(text)) return new FailedPreconditionError('the file system inside the VM is read-only', { field: 'path', cause });
  return new FailedPreconditionError(`${what}: ${text.trim().split('\n')[0] ?? ''}`.trim(), { cause });
}

function spawnFailureReason(desc: string): string {
  const match = /\(([^()]+)\)\W*$/.exec(desc);
  return match ? match[1] : 'cannot be run';
}

function decodeBase64(value: string | undefined): string {
  return value ? Buffer.from(value, 'base64').toString('utf8') : '';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
