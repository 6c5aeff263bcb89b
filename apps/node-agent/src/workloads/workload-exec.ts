import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError } from '@corral/domain';
import { hasExec, hasInteractiveExec, type Driver, type ExecSession, type ExecSessionOptions, type TaskHandle } from '../drivers/driver';

// One exec session over whatever the workload's driver offers: its streaming
// exec, or — for drivers that only run a command to completion (a guest
// agent) — a session that buffers stdin until EOF (bounded), runs the
// command once and then delivers its output. A TTY cannot be faked that way
// and is refused.

export interface ExecLimits {
  /** Most stdin a buffered exec holds before running the command. */
  bufferedStdinMaxBytes: number;
  /** How long a buffered exec may run. */
  bufferedTimeoutMs: number;
}

export const MAX_EXEC_ARGS = 4096;

export async function openExecSession(
  driver: Driver,
  handle: TaskHandle,
  argv: readonly string[],
  options: ExecSessionOptions,
  limits: ExecLimits,
): Promise<ExecSession> {
  if (argv.length === 0 || argv[0] === '') throw new InvalidArgumentError('command is required', { field: 'command' });
  if (argv.length > MAX_EXEC_ARGS) throw new InvalidArgumentError(`command may have at most ${MAX_EXEC_ARGS} arguments`, { field: 'command' });
  if (argv.some((a) => a.includes('\0'))) throw new InvalidArgumentError('command arguments must not contain NUL', { field: 'command' });
  if (hasInteractiveExec(driver)) return driver.execSession(handle, argv, options);
  if (!hasExec(driver)) throw new FailedPreconditionError(`driver ${driver.name} cannot run commands inside a workload`);
  if (options.tty) throw new FailedPreconditionError(`driver ${driver.name} cannot give an exec a terminal (no streaming exec); run without a TTY`);
  if (options.workingDir || (options.env && Object.keys(options.env).length > 0)) {
    throw new FailedPreconditionError(`driver ${driver.name} runs commands without a working directory or extra environment`);
  }
  return bufferedSession((stdin) => driver.exec(handle, argv, { stdin, timeoutMs: limits.bufferedTimeoutMs }), limits);
}

/** The session of a run-to-completion exec: stdin is held until closed, then the command runs once. */
export function bufferedSession(
  run: (stdin: Buffer) => Promise<{ exitCode: number; stdout: string; stderr: string }>,
  limits: Pick<ExecLimits, 'bufferedStdinMaxBytes'>,
): ExecSession {
  const chunks: Buffer[] = [];
  let size = 0;
  let started = false;
  let killed = false;
  const stdoutListeners: ((d: Buffer) => void)[] = [];
  const stderrListeners: ((d: Buffer) => void)[] = [];
  let settle: { resolve: (code: number) => void; reject: (err: unknown) => void } = { resolve: () => undefined, reject: () => undefined };
  const exited = new Promise<number>((resolve, reject) => (settle = { resolve, reject }));
  // The caller may not have awaited `exited` yet when it fails.
  exited.catch(() => undefined);

  const start = () => {
    if (started || killed) return;
    started = true;
    run(Buffer.concat(chunks)).then(
      (outcome) => {
        if (killed) return;
        if (outcome.stdout) for (const l of stdoutListeners) l(Buffer.from(outcome.stdout));
        if (outcome.stderr) for (const l of stderrListeners) l(Buffer.from(outcome.stderr));
        settle.resolve(outcome.exitCode);
      },
      (err: unknown) => settle.reject(err),
    );
  };

  return {
    writeStdin(data) {
      if (started || killed) return;
      size += data.length;
      if (size > limits.bufferedStdinMaxBytes) {
        killed = true;
        settle.reject(new ResourceExhaustedError(`stdin of this exec is buffered and limited to ${limits.bufferedStdinMaxBytes} bytes`, { field: 'stdin' }));
        return;
      }
      chunks.push(Buffer.from(data));
    },
    closeStdin: start,
    onStdout: (l) => stdoutListeners.push(l),
    onStderr: (l) => stderrListeners.push(l),
    exited,
    kill() {
      if (killed) return;
      killed = true;
      // The driver's exec has no abort: its own timeout bounds what keeps running.
      settle.reject(new DeadlineExceededError('the exec was ended'));
    },
  };
}
