import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isProcessAlive, killProcessGroup, processStartTime } from '../process/process-group';
import { spawnSupervised } from './spawn-supervised';

describe('spawnSupervised', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'corral-supervised-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('writes stdout and stderr to one log file and reports the exit code', async () => {
    const logPath = join(dir, 'out.log');
    const p = await spawnSupervised({ program: '/bin/sh', args: ['-c', 'echo out; echo err >&2; exit 3'], env: {}, cwd: dir, logPath });
    expect(p.pid).toBeGreaterThan(1);
    await expect(p.wait()).resolves.toEqual({ exitCode: 3, signal: null });
    expect(readFileSync(logPath, 'utf8')).toBe('out\nerr\n');
    expect(statSync(logPath).mode & 0o777).toBe(0o600);
  });

  it('splits the streams when asked, in the given cwd, with only the given env', async () => {
    const stdoutPath = join(dir, 'stdout');
    const stderrPath = join(dir, 'stderr');
    process.env.CORRAL_SUPERVISED_SECRET = 'hunter2';
    try {
      const p = await spawnSupervised({
        program: 'sh',
        args: ['-c', 'pwd; echo "[$CORRAL_SUPERVISED_SECRET][$MINE]" >&2'],
        env: { PATH: '/usr/bin:/bin', MINE: 'x' },
        cwd: dir,
        stdoutPath,
        stderrPath,
      });
      await p.wait();
    } finally {
      delete process.env.CORRAL_SUPERVISED_SECRET;
    }
    expect(readFileSync(stdoutPath, 'utf8').trim()).toBe(dir);
    expect(readFileSync(stderrPath, 'utf8').trim()).toBe('[][x]');
  });

  it('runs in its own process group, which kill() signals as a whole', async () => {
    const logPath = join(dir, 'out.log');
    const p = await spawnSupervised({ program: '/bin/sh', args: ['-c', 'sleep 30 & echo $!; wait'], env: {}, cwd: dir, logPath });
    const grandchild = await waitForNumber(logPath);
    expect(isProcessAlive(grandchild)).toBe(true);
    expect(processStartTime(p.pid)).toMatch(/^\d+$/);
    expect(p.kill('SIGTERM')).toBe(true);
    await expect(p.wait()).resolves.toEqual({ exitCode: null, signal: 'SIGTERM' });
    await new Promise((r) => setTimeout(r, 100));
    // Dead, though possibly a zombie until init reaps it: the group may
    // still answer kill(-pgid) for a while, so only liveness is checked.
    expect(isProcessAlive(grandchild)).toBe(false);
    expect(isProcessAlive(p.pid)).toBe(false);
  });

  it('killProcessGroup reports a group that does not exist', () => {
    expect(killProcessGroup(2 ** 22 + 12345, 'SIGTERM')).toBe(false);
    expect(() => killProcessGroup(1, 'SIGTERM')).toThrow(RangeError);
  });

  it('rejects when the program cannot be started', async () => {
    await expect(spawnSupervised({ program: '/nonexistent/program', args: [], env: {}, cwd: dir, logPath: join(dir, 'log') })).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('isProcessAlive tells running from gone', () => {
    expect(isProcessAlive(process.pid)).toBe(true);
    expect(isProcessAlive(0)).toBe(false);
    expect(isProcessAlive(2 ** 22 + 12345)).toBe(false);
  });
});

async function waitForNumber(path: string): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const text = readFileSync(path, 'utf8').trim();
    if (/^\d+$/.test(text)) return Number(text);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no pid in ${path}`);
}
