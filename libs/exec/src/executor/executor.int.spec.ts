import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@corral/logging';
import type { Command } from '../command/command';
import { ExecError, ProgramNotAllowedError, execErrorFromResult } from '../errors/exec-error';
import { isProcessAlive } from '../process/process-group';
import { createExecutor } from './executor';

// Real programs: timeouts and aborts must kill the whole process group, not
// just the direct child.
describe('executor running real programs', () => {
  const executor = createExecutor({ allowedPrograms: ['/bin/sh', '/bin/echo', 'sleep'], logger: silentLogger, maxOutputBytes: 64 * 1024 });

  const sh = (script: string, extra: Partial<Command<string>> = {}): Command<string> => ({
    program: '/bin/sh',
    args: ['-c', script],
    parse: (stdout) => stdout,
    mapError: execErrorFromResult,
    ...extra,
  });

  it('runs echo with argv as given', async () => {
    const out = await executor.run({ program: '/bin/echo', args: ['hello', '$USER', '*'], parse: (s) => s.trim(), mapError: execErrorFromResult });
    expect(out).toBe('hello $USER *');
  });

  it('maps a non-zero exit', async () => {
    const err = (await executor.run(sh('echo oops >&2; exit 3')).catch((e) => e)) as ExecError;
    expect(err).toBeInstanceOf(ExecError);
    expect(err).toMatchObject({ reason: 'exit', exitCode: 3, stderrTail: 'oops\n' });
  });

  it('does not pass the agent environment through', async () => {
    process.env.CORRAL_EXEC_TEST_SECRET = 'hunter2';
    try {
      const out = await executor.run(sh('echo "[$CORRAL_EXEC_TEST_SECRET][$ADDED]"', { env: { ADDED: 'yes' } }));
      expect(out.trim()).toBe('[][yes]');
    } finally {
      delete process.env.CORRAL_EXEC_TEST_SECRET;
    }
  });

  it('kills the process group on timeout', async () => {
    const started = Date.now();
    // The grandchild's pid is printed before the wait so the test can check it died too.
    const pidFile = join(tmpdir(), `corral-exec-timeout-${process.pid}`);
    const err = (await executor.run(sh(`sleep 30 & echo $! > ${pidFile}; wait`, { timeoutMs: 300 })).catch((e) => e)) as ExecError;
    expect(err).toMatchObject({ reason: 'timeout', signal: 'SIGKILL' });
    expect(Date.now() - started).toBeLessThan(5000);
    const grandchild = Number(readFileSync(pidFile, 'utf8'));
    rmSync(pidFile);
    await new Promise((r) => setTimeout(r, 100));
    expect(isProcessAlive(grandchild)).toBe(false);
  });

  it('kills the process on abort', async () => {
    const controller = new AbortController();
    const run = executor.run({ program: 'sleep', args: ['30'], parse: () => 'done', mapError: execErrorFromResult }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    await expect(run).rejects.toMatchObject({ reason: 'aborted', signal: 'SIGKILL' });
  });

  it('stops a program that floods its output', async () => {
    await expect(executor.run(sh('while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done'))).rejects.toMatchObject({ reason: 'output-limit' });
  });

  it('refuses programs off the allow-list', async () => {
    await expect(executor.run(sh('true', { program: '/bin/bash' }))).rejects.toBeInstanceOf(ProgramNotAllowedError);
  });
});
