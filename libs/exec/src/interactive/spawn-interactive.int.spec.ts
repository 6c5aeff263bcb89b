import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isProcessAlive } from '../process/process-group';
import { spawnInteractive } from './spawn-interactive';

// Real processes with piped stdio: stdin in while running, both outputs
// out, only the given env, the exit status after all output, and kill
// reaching the whole group.

async function text(stream: AsyncIterable<Buffer | string>): Promise<string> {
  let out = '';
  for await (const chunk of stream) out += chunk.toString();
  return out;
}

describe('spawnInteractive', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'corral-interactive-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('streams stdin in and stdout/stderr out, with only the given env and cwd', async () => {
    process.env.CORRAL_INTERACTIVE_SECRET = 'hunter2';
    try {
      const p = await spawnInteractive({ program: '/bin/sh', args: ['-c', 'read line; echo "got $line [$MINE][$CORRAL_INTERACTIVE_SECRET] $(pwd)"; echo err >&2; exit 6'], env: { MINE: 'x' }, cwd: dir });
      const out = text(p.stdout);
      const err = text(p.stderr);
      p.stdin.end('hello\n');
      await expect(p.exited).resolves.toEqual({ exitCode: 6, signal: null });
      expect(await out).toBe(`got hello [x][] ${dir}\n`);
      expect(await err).toBe('err\n');
    } finally {
      delete process.env.CORRAL_INTERACTIVE_SECRET;
    }
  });

  it('kills the whole process group', async () => {
    const p = await spawnInteractive({ program: '/bin/sh', args: ['-c', 'sleep 300 & echo $!; wait'], env: { PATH: '/usr/bin:/bin' } });
    const iterator = p.stdout[Symbol.asyncIterator]();
    const child = Number((await iterator.next()).value.toString().trim());
    expect(isProcessAlive(child)).toBe(true);
    expect(p.kill()).toBe(true);
    await expect(p.exited).resolves.toMatchObject({ signal: 'SIGKILL' });
    for (let i = 0; i < 100 && isProcessAlive(child); i++) await new Promise((r) => setTimeout(r, 10));
    expect(isProcessAlive(child)).toBe(false);
    expect(p.kill()).toBe(false);
  });

  it('rejects with the errno code (never the argv) when the program cannot start', async () => {
    await expect(spawnInteractive({ program: '/no/such/program', args: ['--token=secret'], env: {} })).rejects.toMatchObject({ code: 'ENOENT', message: expect.not.stringContaining('secret') });
  });
});
