import { spawn } from 'node:child_process';
import type { Logger } from '@corral/logging';
import type { Command, ExecResult, RunOptions } from '../command/command';
import { ExecError, ProgramNotAllowedError } from '../errors/exec-error';
import { killProcessGroup } from '../process/process-group';
import { resolveProgram } from './resolve-program';

export interface ExecutorOptions {
  /**
   * Programs this executor may run: absolute paths or names looked up on
   * PATH once, here. Anything else is refused.
   */
  allowedPrograms: readonly string[];
  logger: Logger;
  /** Used when a command sets no timeout. Default 60 s. */
  defaultTimeoutMs?: number;
  /** Cap on each of stdout and stderr. Default 16 MiB. */
  maxOutputBytes?: number;
  /**
   * Environment every command starts with. Default: a few variables from
   * the agent's own environment that tools need (PATH, HOME, locale,
   * XDG_RUNTIME_DIR for rootless podman), never the whole of it, which holds
   * credentials.
   */
  baseEnv?: Record<string, string>;
  /** Where bare names are looked up. Default: PATH of this process. */
  searchPath?: string;
}

export interface AllowedProgram {
  /** As given in allowedPrograms. */
  name: string;
  /** Absolute path, or undefined when it is not installed here. */
  path: string | undefined;
}

export interface Executor {
  run<T>(command: Command<T>, options?: RunOptions): Promise<T>;
  /** The allow-list as resolved at construction. */
  readonly programs: readonly AllowedProgram[];
  /** The absolute path of an allowed program, undefined when not installed. */
  resolve(program: string): string | undefined;
}

const INHERITED_VARIABLES = ['PATH', 'HOME', 'USER', 'LANG', 'LC_ALL', 'TMPDIR', 'XDG_RUNTIME_DIR'];

export function defaultBaseEnv(source: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of INHERITED_VARIABLES) {
    const value = source[key];
    if (value !== undefined) env[key] = value;
  }
  return env;
}

export function createExecutor(options: ExecutorOptions): Executor {
  const searchPath = options.searchPath ?? process.env.PATH;
  const programs: AllowedProgram[] = options.allowedPrograms.map((name) => ({ name, path: resolveProgram(name, searchPath) }));
  const byName = new Map<string, AllowedProgram>();
  for (const p of programs) {
    byName.set(p.name, p);
    if (p.path) byName.set(p.path, p);
  }
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 60_000;
  const maxOutputBytes = options.maxOutputBytes ?? 16 * 1024 * 1024;
  const baseEnv = options.baseEnv ?? defaultBaseEnv();
  const logger = options.logger;

  return {
    programs,
    resolve: (program) => byName.get(program)?.path,
    async run<T>(command: Command<T>, runOptions: RunOptions = {}): Promise<T> {
      const allowed = byName.get(command.program);
      if (!allowed) throw new ProgramNotAllowedError(command.program);
      if (!allowed.path) {
        throw new ExecError(`${allowed.name} is not installed on this machine`, { program: allowed.name, reason: 'not-installed' });
      }
      const result = await execute(allowed.path, command, {
        timeoutMs: command.timeoutMs ?? defaultTimeoutMs,
        maxOutputBytes,
        env: { ...baseEnv, ...command.env },
        signal: runOptions.signal,
      });
      // Arguments are not logged: they may carry secrets (env values, tokens).
      logger.debug('exec', { program: result.program, argc: command.args.length, exitCode: result.exitCode, signal: result.signal, ms: result.durationMs });
      if (result.exitCode !== 0) throw command.mapError(result);
      return command.parse(result.stdout, result.stderr);
    },
  };
}

interface ExecuteOptions {
  timeoutMs: number;
  maxOutputBytes: number;
  env: Record<string, string>;
  signal?: AbortSignal;
}

function execute(path: string, command: Command<unknown>, options: ExecuteOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(new ExecError(`${path} was not started: aborted`, { program: path, reason: 'aborted', cause: options.signal.reason }));
      return;
    }
    const started = Date.now();
    const child = spawn(path, [...command.args], {
      shell: false,
      // Its own process group, so a timeout or abort can kill whatever it
      // forked too, not just the direct child.
      detached: true,
      cwd: command.cwd,
      env: options.env,
      stdio: [command.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      windowsHide: true,
    });

    const stdout = new OutputBuffer(options.maxOutputBytes);
    const stderr = new OutputBuffer(options.maxOutputBytes);
    let failure: { reason: 'timeout' | 'aborted' | 'output-limit'; message: string; cause?: unknown } | undefined;
    let settled = false;

    const killGroup = (reason: 'timeout' | 'aborted' | 'output-limit', message: string, cause?: unknown) => {
      if (failure) return;
      failure = { reason, message, cause };
      // SIGKILL straight away: a program past its deadline or no longer
      // wanted gets no grace period that could stall the caller further.
      if (child.pid !== undefined) killProcessGroup(child.pid, 'SIGKILL');
    };

    const timer = setTimeout(() => killGroup('timeout', `${path} timed out after ${options.timeoutMs} ms`), options.timeoutMs);
    const onAbort = () => killGroup('aborted', `${path} was aborted`, options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });

    const finish = (outcome: ExecResult | ExecError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      if (outcome instanceof ExecError) reject(outcome);
      else resolve(outcome);
    };

    child.stdout?.on('data', (chunk: Buffer) => {
      if (!stdout.append(chunk)) killGroup('output-limit', `${path} wrote more than ${options.maxOutputBytes} bytes to stdout`);
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      if (!stderr.append(chunk)) killGroup('output-limit', `${path} wrote more than ${options.maxOutputBytes} bytes to stderr`);
    });
    if (child.stdin && command.stdin !== undefined) {
      // A program that exits without reading its input closes the pipe;
      // that EPIPE is not the command's failure, its exit status tells.
      child.stdin.on('error', () => undefined);
      child.stdin.end(command.stdin);
    }

    child.once('error', (err) => {
      finish(new ExecError(`${path} could not be started: ${err.message}`, { program: path, reason: 'spawn-failed', cause: err }));
    });
    // 'close' (not 'exit') so that all output has been read.
    child.once('close', (exitCode: number | null, signal: NodeJS.Signals | null) => {
      if (failure) {
        finish(new ExecError(failure.message, { program: path, reason: failure.reason, exitCode, signal, stderrTail: stderr.text(), cause: failure.cause }));
        return;
      }
      finish({ program: path, exitCode, signal, stdout: stdout.text(), stderr: stderr.text(), durationMs: Date.now() - started });
    });
  });
}

/** Collects a stream's output up to a byte cap. */
class OutputBuffer {
  private readonly chunks: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit: number) {}

  /** False once the cap is exceeded; the excess is dropped. */
  append(chunk: Buffer): boolean {
    if (this.size + chunk.length > this.limit) {
      this.chunks.push(chunk.subarray(0, Math.max(0, this.limit - this.size)));
      this.size = this.limit;
      return false;
    }
    this.chunks.push(chunk);
    this.size += chunk.length;
    return true;
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}
