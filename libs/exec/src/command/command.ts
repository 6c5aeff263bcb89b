// An external program call as data (in the style of simple-git): what to run,
// how to read its output and how to turn a failure into a domain error. The
// executor is the only code that actually starts it, so timeouts, abort,
// output caps and the program allow-list apply to every call alike.

/** What a finished program left behind. */
export interface ExecResult {
  /** The program as resolved on the allow-list (an absolute path). */
  program: string;
  /** null when the process was ended by a signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface Command<T> {
  /** A name on the executor's allow-list, or its resolved absolute path. */
  program: string;
  /** Passed as argv with no shell in between: never quote or escape. */
  args: readonly string[];
  /** Turns the output of a successful (exit 0) run into the command's value. */
  parse(stdout: string, stderr: string): T;
  /**
   * Turns a run that exited non-zero into the error the caller should see,
   * e.g. a NotFoundError when `podman inspect` says there is no such
   * container. `execErrorFromResult` is the generic choice.
   */
  mapError(result: ExecResult): Error;
  /** Overrides the executor's default timeout. */
  timeoutMs?: number;
  /** Written to the program's stdin, which is then closed. */
  stdin?: string | Buffer;
  /** Added to the executor's base environment for this call only. */
  env?: Record<string, string>;
  cwd?: string;
}

export interface RunOptions {
  /** Aborting kills the program's process group and rejects the run. */
  signal?: AbortSignal;
}
