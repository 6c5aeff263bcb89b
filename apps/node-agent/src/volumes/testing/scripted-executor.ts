import type { AllowedProgram, Command, ExecResult, Executor } from '@corral/exec';

// An Executor for unit tests: no process is started; a responder decides
// each call's exit code and output, and the real command's parse/mapError
// turn it into a value or an error, exactly as the real executor would.

export interface ScriptedCall {
  program: string;
  args: string[];
}

export interface ScriptedOutput {
  exitCode?: number;
  stdout?: string;
  stderr?: string;
}

export type Responder = (call: ScriptedCall) => ScriptedOutput | Promise<ScriptedOutput>;

export class ScriptedExecutor implements Executor {
  readonly calls: ScriptedCall[] = [];
  readonly programs: readonly AllowedProgram[];
  private readonly failures: Array<{ match: (call: ScriptedCall) => boolean; output: ScriptedOutput }> = [];

  constructor(
    private readonly responder: Responder,
    programs: readonly string[] = [],
  ) {
    this.programs = programs.map((name) => ({ name, path: `/usr/sbin/${name}` }));
  }

  resolve(program: string): string | undefined {
    return this.programs.find((p) => p.name === program)?.path;
  }

  /** Makes the next call that matches fail with `output` instead of reaching the responder. */
  failNext(match: (call: ScriptedCall) => boolean, output: ScriptedOutput): void {
    this.failures.push({ match, output });
  }

  async run<T>(command: Command<T>): Promise<T> {
    const call = { program: command.program, args: [...command.args] };
    this.calls.push(call);
    const failure = this.failures.findIndex((f) => f.match(call));
    let output: ScriptedOutput;
    if (failure >= 0) {
      output = this.failures[failure].output;
      this.failures.splice(failure, 1);
    } else {
      output = await this.responder(call);
    }
    const result: ExecResult = {
      program: `/usr/sbin/${command.program}`,
      exitCode: output.exitCode ?? 0,
      signal: null,
      stdout: output.stdout ?? '',
      stderr: output.stderr ?? '',
      durationMs: 1,
    };
    if (result.exitCode !== 0) throw command.mapError(result);
    return command.parse(result.stdout, result.stderr);
  }

  /** Calls as `program arg arg…` lines, for readable assertions. */
  lines(filter?: (call: ScriptedCall) => boolean): string[] {
    return this.calls.filter(filter ?? (() => true)).map((c) => [c.program, ...c.args].join(' '));
  }
}
