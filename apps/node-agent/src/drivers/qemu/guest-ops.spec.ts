import type { ExecOutcome } from '../driver';
import { checkArgv, checkGuestPath, guestExec, guestListDirectory, guestReadFile, guestWriteFile, listCommand, parseStatRecords, type Sessions } from './guest-ops';
import { QgaCommandError, type QgaClient } from './qga-client';

// Exec and file operations against a fake guest: an in-memory agent with a
// tiny filesystem and the few programs the driver runs in the guest (stat,
// find, chmod, mv, rm, kill), answering like qemu-ga 7.2 does.

interface Node {
  kind: 'file' | 'directory' | 'symlink';
  data: Buffer;
  mode: number;
  target?: string;
}

type Program = (args: string[], stdin: Buffer) => ExecOutcome | 'running';

const TYPE_BITS = { file: 0o100000, directory: 0o040000, symlink: 0o120000 };

class FakeGuest {
  readonly fs = new Map<string, Node>([
    ['/', { kind: 'directory', data: Buffer.alloc(0), mode: 0o755 }],
    ['/etc', { kind: 'directory', data: Buffer.alloc(0), mode: 0o755 }],
    ['/etc/motd', { kind: 'file', data: Buffer.from('hello'), mode: 0o640 }],
    ['/tmp', { kind: 'directory', data: Buffer.alloc(0), mode: 0o1777 }],
  ]);
  readonly calls: Array<{ command: string; args?: Record<string, unknown> }> = [];
  readonly handles = new Map<number, { path: string; at: number }>();
  private readonly procs = new Map<number, ExecOutcome | 'running'>();
  private nextPid = 100;
  private nextHandle = 1000;
  sessions = 0;

  readonly programs: Record<string, Program> = {
    echo: (args) => ok(`${args.join(' ')}\n`),
    cat: (_args, stdin) => ok(stdin.toString()),
    sleep: () => 'running',
    false: () => ({ exitCode: 1, stdout: '', stderr: '' }),
    kill: (args) => {
      this.procs.set(Number(args[1]), { exitCode: 137, stdout: '', stderr: '' });
      return ok('');
    },
    chmod: ([mode, path]) => {
      const node = this.fs.get(path);
      if (!node) return fail(`chmod: ${path}: No such file or directory`);
      node.mode = Number.parseInt(mode, 8);
      return ok('');
    },
    mv: (args) => {
      const [from, to] = args.slice(-2);
      const node = this.fs.get(from);
      if (!node) return fail(`mv: can't rename '${from}': No such file or directory`);
      this.fs.delete(from);
      this.fs.set(to, node);
      return ok('');
    },
    rm: ([, path]) => {
      this.fs.delete(path);
      return ok('');
    },
    stat: (args) => {
      const follow = args[0] === '-L';
      const path = args.at(-1) as string;
      const record = this.statLine(path, follow);
      return record ? ok(`${record}\n`) : fail(`stat: can't stat '${path}': No such file or directory`);
    },
    find: (args) => {
      const dir = args[1];
      const start = this.fs.get(dir);
      if (!start) return fail(`find: ${dir}: No such file or directory`);
      const real = start.kind === 'symlink' ? (start.target as string) : dir;
      const lines = [this.statLine(dir, false)];
      const prefix = real === '/' ? '/' : `${real}/`;
      for (const path of this.fs.keys()) {
        if (path.startsWith(prefix) && path.length > prefix.length && !path.slice(prefix.length).includes('/')) {
          lines.push(this.statLine(path, false)?.replace(` ${path}`, ` ${dir === '/' ? '' : dir}/${path.slice(prefix.length)}`));
        }
      }
      return ok(`${lines.join('\n')}\n`);
    },
  };

  readonly client = { execute: (command: string, args?: Record<string, unknown>) => this.execute(command, args) } as unknown as QgaClient;

  readonly run: Sessions = async (fn) => {
    this.sessions++;
    return fn(this.client);
  };

  private statLine(path: string, follow: boolean): string | undefined {
    let node = this.fs.get(path);
    if (node?.kind === 'symlink' && follow) node = this.fs.get(node.target as string);
    if (!node) return undefined;
    return `${(TYPE_BITS[node.kind] | node.mode).toString(16)} ${node.data.length} 1700000000 ${path}`;
  }

  private async execute(command: string, args: Record<string, unknown> = {}): Promise<unknown> {
    this.calls.push({ command, args });
    const error = (desc: string) => new QgaCommandError(command, 'GenericError', desc);
    switch (command) {
      case 'guest-exec': {
        const program = this.programs[args.path as string];
        if (!program) throw error(`Guest agent command failed, error was 'Failed to execute child process “${args.path}” (No such file or directory)'`);
        const pid = this.nextPid++;
        this.procs.set(pid, program(args.arg as string[], Buffer.from((args['input-data'] as string) ?? '', 'base64')));
        return { pid };
      }
      case 'guest-exec-status': {
        const state = this.procs.get(args.pid as number);
        if (!state) throw error("Invalid parameter 'pid'");
        if (state === 'running') return { exited: false };
        this.procs.delete(args.pid as number);
        return {
          exited: true,
          ...(state.exitCode >= 128 ? { signal: state.exitCode - 128 } : { exitcode: state.exitCode }),
          'out-data': Buffer.from(state.stdout).toString('base64'),
          'err-data': Buffer.from(state.stderr).toString('base64'),
        };
      }
      case 'guest-file-open': {
        const path = args.path as string;
        const parent = path.slice(0, path.lastIndexOf('/')) || '/';
        if (args.mode === 'r' && !this.fs.has(path)) throw error(`failed to open file '${path}' (mode: 'r'): No such file or directory`);
        if (args.mode === 'w') {
          if (!this.fs.has(parent)) throw error(`failed to open file '${path}' (mode: 'w'): No such file or directory`);
          this.fs.set(path, { kind: 'file', data: Buffer.alloc(0), mode: 0o666 });
        }
        const handle = this.nextHandle++;
        this.handles.set(handle, { path, at: 0 });
        return handle;
      }
      case 'guest-file-read': {
        const open = this.handles.get(args.handle as number);
        if (!open) throw error(`handle '${args.handle}' has not been found`);
        const node = this.fs.get(open.path) as Node;
        if (node.kind === 'directory') throw error('failed to read file: Is a directory');
        const data = node.data.subarray(open.at, open.at + (args.count as number));
        open.at += data.length;
        return { count: data.length, 'buf-b64': data.toString('base64'), eof: open.at >= node.data.length && data.length < (args.count as number) };
      }
      case 'guest-file-write': {
        const open = this.handles.get(args.handle as number);
        if (!open) throw error(`handle '${args.handle}' has not been found`);
        const node = this.fs.get(open.path) as Node;
        const data = Buffer.from(args['buf-b64'] as string, 'base64');
        node.data = Buffer.concat([node.data, data]);
        return { count: data.length, eof: false };
      }
      case 'guest-file-close':
        if (!this.handles.delete(args.handle as number)) throw error(`handle '${args.handle}' has not been found`);
        return {};
      default:
        throw new QgaCommandError(command, 'CommandNotFound', `The command ${command} has not been found`);
    }
  }

  commands(name: string) {
    return this.calls.filter((c) => c.command === name);
  }
}

const ok = (stdout: string): ExecOutcome => ({ exitCode: 0, stdout, stderr: '' });
const fail = (stderr: string): ExecOutcome => ({ exitCode: 1, stdout: '', stderr: `${stderr}\n` });

async function* chunksOf(...parts: Array<string | Buffer>): AsyncIterable<Buffer> {
  for (const part of parts) yield Buffer.from(part);
}

async function collect(iterable: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const chunk of iterable) out.push(chunk);
  return out;
}

describe('guest paths and argv', () => {
  it('accepts absolute paths, normalised, and refuses relative ones, .. and control characters, naming the field', () => {
    expect(checkGuestPath('/etc/motd')).toBe('/etc/motd');
    expect(checkGuestPath('/a//b/./c/')).toBe('/a/b/c');
    expect(checkGuestPath('/')).toBe('/');
    expect(checkGuestPath('/a..b/..c')).toBe('/a..b/..c');
    for (const bad of ['etc/motd', '', './x', '/tmp/../etc/shadow', '/..', '/a/b/..', '/a\nb', '/a\0b']) {
      expect(() => checkGuestPath(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', field: 'path' }));
    }
    expect(() => checkGuestPath(42 as unknown as string, 'dir')).toThrow(expect.objectContaining({ field: 'dir' }));
    expect(() => checkGuestPath(`/${'a'.repeat(5000)}`)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('4096') }));
  });

  it('refuses an empty command or arguments with NUL bytes', () => {
    expect(() => checkArgv([])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', field: 'argv' }));
    expect(() => checkArgv([''])).toThrow(expect.objectContaining({ field: 'argv[0]' }));
    expect(() => checkArgv(['echo', 'a\0b'])).toThrow(expect.objectContaining({ field: 'argv[1]' }));
    expect(() => checkArgv(['echo', 'a b; rm -rf /'])).not.toThrow();
  });
});

describe('guest exec', () => {
  it('runs argv through guest-exec with stdin, polls until it exits, and decodes its output', async () => {
    const guest = new FakeGuest();
    const outcome = await guestExec(guest.run, ['cat'], { stdin: 'from stdin', timeoutMs: 10_000 });
    expect(outcome).toEqual({ exitCode: 0, stdout: 'from stdin', stderr: '' });
    expect(guest.commands('guest-exec')[0].args).toEqual({ path: 'cat', arg: [], 'capture-output': true, 'input-data': Buffer.from('from stdin').toString('base64') });
    expect(await guestExec(guest.run, ['echo', 'a b', '$HOME'], { timeoutMs: 10_000 })).toMatchObject({ stdout: 'a b $HOME\n' });
    expect(guest.commands('guest-exec')[1].args).not.toHaveProperty('input-data');
  });

  it('reports non-zero exits and deaths by signal as exit codes, and an unknown program as 127', async () => {
    const guest = new FakeGuest();
    guest.programs.crash = () => ({ exitCode: 128 + 11, stdout: '', stderr: '' });
    expect(await guestExec(guest.run, ['false'], { timeoutMs: 10_000 })).toEqual({ exitCode: 1, stdout: '', stderr: '' });
    expect((await guestExec(guest.run, ['crash'], { timeoutMs: 10_000 })).exitCode).toBe(139);
    expect(await guestExec(guest.run, ['no-such-program'], { timeoutMs: 10_000 })).toEqual({ exitCode: 127, stdout: '', stderr: 'no-such-program: No such file or directory\n' });
  });

  it('kills a command that outlives its deadline and fails with DeadlineExceeded', async () => {
    const guest = new FakeGuest();
    await expect(guestExec(guest.run, ['sleep', '100'], { timeoutMs: 30 }, { maxPollIntervalMs: 5 })).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    const kill = guest.commands('guest-exec').find((c) => c.args?.path === 'kill');
    expect(kill?.args).toMatchObject({ path: 'kill', arg: ['-KILL', '100'] });
  });

  it('refuses bad argv and timeouts before reaching the guest', async () => {
    const guest = new FakeGuest();
    await expect(guestExec(guest.run, [], { timeoutMs: 1000 })).rejects.toMatchObject({ field: 'argv' });
    await expect(guestExec(guest.run, ['echo'], { timeoutMs: 0 })).rejects.toMatchObject({ field: 'timeoutMs' });
    expect(guest.sessions).toBe(0);
  });
});

describe('guest files', () => {
  it('reads a file in chunks, each read its own agent session, and closes the handle', async () => {
    const guest = new FakeGuest();
    guest.fs.set('/tmp/data', { kind: 'file', data: Buffer.from('0123456789'), mode: 0o644 });
    const chunks = await collect(await guestReadFile(guest.run, '/tmp/data', { chunkBytes: 4 }));
    expect(chunks.map(String)).toEqual(['0123', '4567', '89']);
    expect(guest.handles.size).toBe(0);
    expect(guest.sessions).toBeGreaterThanOrEqual(3);
    // An empty file: one session, no chunks, closed.
    guest.fs.set('/tmp/empty', { kind: 'file', data: Buffer.alloc(0), mode: 0o644 });
    expect(await collect(await guestReadFile(guest.run, '/tmp/empty'))).toEqual([]);
    expect(guest.handles.size).toBe(0);
  });

  it('closes the handle when the reader stops early', async () => {
    const guest = new FakeGuest();
    guest.fs.set('/tmp/data', { kind: 'file', data: Buffer.alloc(100, 1), mode: 0o644 });
    for await (const chunk of await guestReadFile(guest.run, '/tmp/data', { chunkBytes: 10 })) {
      expect(chunk.length).toBe(10);
      break;
    }
    expect(guest.handles.size).toBe(0);
  });

  it('says NotFound for a missing file and InvalidArgument for a directory, before any chunk, and refuses .. without asking the guest', async () => {
    const guest = new FakeGuest();
    await expect(guestReadFile(guest.run, '/nope')).rejects.toMatchObject({ code: 'NOT_FOUND', field: 'path' });
    await expect(guestReadFile(guest.run, '/etc')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'path', message: 'path is a directory' });
    expect(guest.handles.size).toBe(0);
    const before = guest.sessions;
    await expect(guestReadFile(guest.run, '/tmp/../etc/motd')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'path' });
    await expect(guestWriteFile(guest.run, '/tmp/../x', chunksOf('x'), { maxBytes: 10 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'path' });
    await expect(guestListDirectory(guest.run, 'tmp')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'path' });
    expect(guest.sessions).toBe(before);
  });

  it('writes through a private temp file beside the target, in chunks, then renames it over the target with its mode', async () => {
    const guest = new FakeGuest();
    const result = await guestWriteFile(guest.run, '/tmp/out.txt', chunksOf('hello ', 'wor', 'ld\n'), { maxBytes: 100, mode: 0o640 }, { chunkBytes: 4 });
    expect(result).toEqual({ bytes: 12 });
    expect(guest.fs.get('/tmp/out.txt')).toMatchObject({ kind: 'file', mode: 0o640 });
    expect(guest.fs.get('/tmp/out.txt')?.data.toString()).toBe('hello world\n');
    const writes = guest.commands('guest-file-write').map((c) => Buffer.from(c.args?.['buf-b64'] as string, 'base64').toString());
    expect(writes).toEqual(['hell', 'o wo', 'rld\n']);
    const temp = guest.commands('guest-file-open')[0].args?.path as string;
    expect(temp).toMatch(/^\/tmp\/\.out\.txt\.corral-[0-9a-f]+\.tmp$/);
    // Owner-only before the first byte, the asked mode only once complete, then the rename.
    const helpers = guest.commands('guest-exec').map((c) => [c.args?.path, ...(c.args?.arg as string[])].join(' '));
    expect(helpers.filter((h) => !h.startsWith('stat'))).toEqual([`chmod 600 ${temp}`, `chmod 640 ${temp}`, `mv -f -T ${temp} /tmp/out.txt`]);
    expect(guest.calls.findIndex((c) => c.command === 'guest-file-write')).toBeGreaterThan(guest.calls.findIndex((c) => c.args?.arg && (c.args.arg as string[])[0] === '600'));
    expect([...guest.fs.keys()].filter((p) => p.includes('corral-'))).toEqual([]);
    expect(guest.handles.size).toBe(0);
  });

  it('keeps an existing file mode unless one is given, and defaults new files to 0644', async () => {
    const guest = new FakeGuest();
    await guestWriteFile(guest.run, '/etc/motd', chunksOf('new'), { maxBytes: 100 });
    expect(guest.fs.get('/etc/motd')).toMatchObject({ mode: 0o640, data: Buffer.from('new') });
    await guestWriteFile(guest.run, '/etc/fresh', chunksOf(''), { maxBytes: 100 });
    expect(guest.fs.get('/etc/fresh')).toMatchObject({ mode: 0o644, data: Buffer.alloc(0) });
  });

  it('refuses an oversized write with ResourceExhausted, leaving the old content and no temp file', async () => {
    const guest = new FakeGuest();
    await expect(guestWriteFile(guest.run, '/etc/motd', chunksOf('x'.repeat(6), 'y'.repeat(6)), { maxBytes: 10 }, { chunkBytes: 4 })).rejects.toMatchObject({
      code: 'RESOURCE_EXHAUSTED',
    });
    expect(guest.fs.get('/etc/motd')?.data.toString()).toBe('hello');
    expect([...guest.fs.keys()].filter((p) => p.includes('corral-'))).toEqual([]);
    expect(guest.handles.size).toBe(0);
  });

  it('leaves no temp file when the content stream fails midway', async () => {
    const guest = new FakeGuest();
    async function* broken(): AsyncIterable<Buffer> {
      yield Buffer.from('part');
      throw new Error('client went away');
    }
    await expect(guestWriteFile(guest.run, '/tmp/x', broken(), { maxBytes: 100 }, { chunkBytes: 2 })).rejects.toThrow('client went away');
    expect([...guest.fs.keys()].filter((p) => p.startsWith('/tmp/'))).toEqual([]);
    expect(guest.handles.size).toBe(0);
  });

  it('refuses writing onto a directory or into a missing one, and bad limits', async () => {
    const guest = new FakeGuest();
    await expect(guestWriteFile(guest.run, '/etc', chunksOf('x'), { maxBytes: 10 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'path' });
    await expect(guestWriteFile(guest.run, '/no/dir/file', chunksOf('x'), { maxBytes: 10 })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(guestWriteFile(guest.run, '/tmp/x', chunksOf('x'), { maxBytes: -1 })).rejects.toMatchObject({ field: 'maxBytes' });
    await expect(guestWriteFile(guest.run, '/tmp/x', chunksOf('x'), { maxBytes: 10, mode: 0o10000 })).rejects.toMatchObject({ field: 'mode' });
  });
});

describe('guest directory listings', () => {
  it('parses stat records: kinds and modes from the raw mode, names with spaces, names continued over a newline', () => {
    const out = ['41ed 120 1700000000 /d', '81a4 5 1700000001 /d/a file', '41ed 60 1700000002 /d/sub', 'a1ff 7 1700000003 /d/link', '21b6 0 1700000004 /d/two', 'lines', ''].join('\n');
    expect(parseStatRecords(out)).toEqual([
      { path: '/d', kind: 'directory', sizeBytes: 120, mode: 0o755, modifiedAt: new Date(1_700_000_000_000) },
      { path: '/d/a file', kind: 'file', sizeBytes: 5, mode: 0o644, modifiedAt: new Date(1_700_000_001_000) },
      { path: '/d/sub', kind: 'directory', sizeBytes: 60, mode: 0o755, modifiedAt: new Date(1_700_000_002_000) },
      { path: '/d/link', kind: 'symlink', sizeBytes: 7, mode: 0o777, modifiedAt: new Date(1_700_000_003_000) },
      { path: '/d/two\nlines', kind: 'other', sizeBytes: 0, mode: 0o666, modifiedAt: new Date(1_700_000_004_000) },
    ]);
    expect(listCommand('/d')).toEqual(['find', '-H', '/d', '-maxdepth', '1', '-exec', 'stat', '-c', '%f %s %Y %n', '{}', '+']);
  });

  it('lists a directory (not itself), sorted, following a symlinked start point', async () => {
    const guest = new FakeGuest();
    guest.fs.set('/etc/b', { kind: 'directory', data: Buffer.alloc(0), mode: 0o700 });
    guest.fs.set('/var', { kind: 'symlink', data: Buffer.from('/etc'), mode: 0o777, target: '/etc' });
    const entries = await guestListDirectory(guest.run, '/etc/');
    expect(entries.map((e) => [e.name, e.kind, e.mode, e.sizeBytes])).toEqual([
      ['b', 'directory', 0o700, 0],
      ['motd', 'file', 0o640, 5],
    ]);
    expect((await guestListDirectory(guest.run, '/var')).map((e) => e.name)).toEqual(['b', 'motd']);
    expect((await guestListDirectory(guest.run, '/')).map((e) => e.name)).toEqual(['etc', 'tmp', 'var']);
  });

  it('says NotFound for a missing directory and InvalidArgument for a file', async () => {
    const guest = new FakeGuest();
    await expect(guestListDirectory(guest.run, '/nope')).rejects.toMatchObject({ code: 'NOT_FOUND', field: 'path' });
    await expect(guestListDirectory(guest.run, '/etc/motd')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: 'path is not a directory' });
  });
});
