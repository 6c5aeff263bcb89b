import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { spawn } from 'node:child_process';
import { silentLogger } from '@corral/logging';
import type { Command } from '../command/command';
import { ExecError, ProgramNotAllowedError, execErrorFromResult } from '../errors/exec-error';
import { createExecutor } from './executor';

// The executor with child_process mocked: what it passes to spawn, and how it
// feeds output to a command's parser and failures to its error mapper.
jest.mock('node:child_process', () => ({ spawn: jest.fn() }));
const spawnMock = spawn as unknown as jest.Mock;

class FakeChild extends EventEmitter {
  pid = 4242;
  stdout = new PassThrough();
  stderr = new PassThrough();
  stdin = new PassThrough();
  written: Buffer[] = [];
  constructor() {
    super();
    this.stdin.on('data', (c: Buffer) => this.written.push(c));
  }
  finish(exitCode: number | null, out = '', err = '', signal: NodeJS.Signals | null = null) {
    this.stdout.end(out);
    this.stderr.end(err);
    setImmediate(() => this.emit('close', exitCode, signal));
  }
}

function nextChild(): FakeChild {
  const child = new FakeChild();
  spawnMock.mockImplementationOnce(() => child);
  return child;
}

const lines: Command<string[]> = {
  program: 'echo',
  args: ['a b', '$HOME', '; rm -rf /'],
  parse: (stdout) => stdout.split('\n').filter(Boolean),
  mapError: execErrorFromResult,
};

describe('createExecutor with a mocked child_process', () => {
  beforeEach(() => spawnMock.mockReset());

  const executor = () =>
    createExecutor({ allowedPrograms: ['echo', '/bin/cat'], logger: silentLogger, searchPath: '/usr/bin:/bin', baseEnv: { PATH: '/usr/bin:/bin' } });

  it('resolves names on the search path at construction', () => {
    const ex = executor();
    expect(ex.resolve('echo')).toMatch(/^\/(usr\/)?bin\/echo$/);
    expect(ex.resolve('/bin/cat')).toBe('/bin/cat');
    expect(ex.programs.map((p) => p.name)).toEqual(['echo', '/bin/cat']);
  });

  it('passes argv untouched with no shell, in its own process group, with only the base env', async () => {
    const child = nextChild();
    const run = executor().run({ ...lines, env: { EXTRA: '1' } });
    child.finish(0, 'x\ny\n');
    await expect(run).resolves.toEqual(['x', 'y']);
    const [path, args, opts] = spawnMock.mock.calls[0];
    expect(path).toMatch(/\/echo$/);
    expect(args).toEqual(['a b', '$HOME', '; rm -rf /']);
    expect(opts).toMatchObject({ shell: false, detached: true, env: { PATH: '/usr/bin:/bin', EXTRA: '1' } });
    expect(Object.keys(opts.env)).toEqual(['PATH', 'EXTRA']);
    expect(opts.stdio[0]).toBe('ignore');
  });

  it('accepts the resolved absolute path of an allowed name', async () => {
    const ex = executor();
    const child = nextChild();
    const run = ex.run({ ...lines, program: ex.resolve('echo') as string });
    child.finish(0, 'ok\n');
    await expect(run).resolves.toEqual(['ok']);
  });

  it('hands stdout and stderr to the parser', async () => {
    const child = nextChild();
    const parse = jest.fn((stdout: string, stderr: string) => ({ stdout, stderr }));
    const run = executor().run({ program: 'echo', args: [], parse, mapError: execErrorFromResult });
    child.finish(0, 'out', 'warn');
    await expect(run).resolves.toEqual({ stdout: 'out', stderr: 'warn' });
  });

  it('writes stdin and closes it', async () => {
    const child = nextChild();
    const run = executor().run({ program: '/bin/cat', args: [], stdin: 'secret input', parse: (s) => s, mapError: execErrorFromResult });
    await new Promise((r) => setImmediate(r));
    child.finish(0, 'done');
    await run;
    expect(Buffer.concat(child.written).toString()).toBe('secret input');
    expect(spawnMock.mock.calls[0][2].stdio[0]).toBe('pipe');
  });

  it('maps a non-zero exit through the command mapError and does not parse', async () => {
    const child = nextChild();
    const parse = jest.fn();
    class NoSuchThing extends Error {}
    const mapError = jest.fn(() => new NoSuchThing('no such thing'));
    const run = executor().run({ program: 'echo', args: [], parse, mapError });
    child.finish(125, '', 'Error: no such container');
    await expect(run).rejects.toBeInstanceOf(NoSuchThing);
    expect(parse).not.toHaveBeenCalled();
    expect(mapError).toHaveBeenCalledWith(expect.objectContaining({ exitCode: 125, stderr: 'Error: no such container' }));
  });

  it('the generic mapper keeps program, exit code and stderr tail, nothing else', async () => {
    const child = nextChild();
    const run = executor().run({ ...lines, env: { TOKEN: 'hunter2' } });
    child.finish(2, '', 'bad usage');
    const err = (await run.catch((e) => e)) as ExecError;
    expect(err).toBeInstanceOf(ExecError);
    expect(err).toMatchObject({ reason: 'exit', exitCode: 2, signal: null, stderrTail: 'bad usage' });
    expect(JSON.stringify({ ...err, message: err.message })).not.toContain('hunter2');
    expect(err.message).not.toContain('rm -rf');
  });

  it('refuses programs off the allow-list without spawning', async () => {
    await expect(executor().run({ ...lines, program: 'rm' })).rejects.toBeInstanceOf(ProgramNotAllowedError);
    await expect(executor().run({ ...lines, program: '/usr/bin/rm' })).rejects.toMatchObject({ reason: 'not-allowed' });
    expect(spawnMock).not.toHaveBeenCalled();
  });

  it('reports an allowed but missing program as not installed', async () => {
    const ex = createExecutor({ allowedPrograms: ['no-such-program-here'], logger: silentLogger, searchPath: '/usr/bin' });
    expect(ex.resolve('no-such-program-here')).toBeUndefined();
    await expect(ex.run({ ...lines, program: 'no-such-program-here' })).rejects.toMatchObject({ reason: 'not-installed' });
    expect(spawnMock).not.toHaveBeenCalled();
  });

  it('does not start when the signal is already aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(executor().run(lines, { signal: controller.signal })).rejects.toMatchObject({ reason: 'aborted' });
    expect(spawnMock).not.toHaveBeenCalled();
  });

  it('maps a spawn error', async () => {
    const child = nextChild();
    const run = executor().run(lines);
    child.emit('error', Object.assign(new Error('spawn EACCES'), { code: 'EACCES' }));
    await expect(run).rejects.toMatchObject({ reason: 'spawn-failed' });
  });
});
