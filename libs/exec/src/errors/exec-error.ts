import type { ExecResult } from '../command/command';

// Failures of the executor itself. They are plain Errors rather than Corral's
// typed errors on purpose: a command's mapError decides what a failure means
// to callers, and anything left unmapped must surface as INTERNAL with a fixed
// message instead of leaking program output to a client. Neither the
// environment nor the arguments are kept (both may carry secrets).

export type ExecFailureReason =
  /** The program is not on the executor's allow-list. */
  | 'not-allowed'
  /** On the allow-list but not found on this machine. */
  | 'not-installed'
  /** The OS refused to start it (EACCES, ENOENT of cwd...). */
  | 'spawn-failed'
  /** It ran and exited non-zero or was killed by a signal. */
  | 'exit'
  | 'timeout'
  | 'aborted'
  /** stdout or stderr grew past the executor's cap. */
  | 'output-limit';

export interface ExecErrorDetails {
  program: string;
  reason: ExecFailureReason;
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
  /** The end of stderr, for diagnosis in logs. */
  stderrTail?: string;
  cause?: unknown;
}

/** How much of stderr an ExecError keeps. */
export const STDERR_TAIL_CHARS = 2048;

export class ExecError extends Error {
  override readonly name: string = 'ExecError';
  readonly program: string;
  readonly reason: ExecFailureReason;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderrTail: string;

  constructor(message: string, details: ExecErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.program = details.program;
    this.reason = details.reason;
    this.exitCode = details.exitCode ?? null;
    this.signal = details.signal ?? null;
    this.stderrTail = (details.stderrTail ?? '').slice(-STDERR_TAIL_CHARS);
  }
}

export class ProgramNotAllowedError extends ExecError {
  override readonly name = 'ProgramNotAllowedError';

  constructor(program: string) {
    super(`program ${JSON.stringify(program)} is not on the executor's allow-list`, { program, reason: 'not-allowed' });
  }
}

export function isExecError(err: unknown): err is ExecError {
  return err instanceof ExecError;
}

/** The generic mapError: the exit status and the end of stderr, nothing else. */
export function execErrorFromResult(result: ExecResult): ExecError {
  const how = result.exitCode === null ? `was killed by ${result.signal ?? 'a signal'}` : `exited with code ${result.exitCode}`;
  return new ExecError(`${result.program} ${how}`, {
    program: result.program,
    reason: 'exit',
    exitCode: result.exitCode,
    signal: result.signal,
    stderrTail: result.stderr,
  });
}
