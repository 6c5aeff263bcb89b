import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { killProcessGroup } from '../process/process-group';
import type { ExitStatus } from '../supervised/spawn-supervised';

// Programs whose input and output are streamed while they run: `podman exec
// -i` behind an interactive exec session, a shell in a process workload's
// directory. Unlike the executor's commands, nothing is buffered or capped
// here: the caller consumes stdout/stderr as they come and owns the
// lifetime (kill). Still no shell, and the environment is exactly what the
// caller passes.

export interface InteractiveOptions {
  /** Absolute path (resolve allow-listed names with Executor.resolve first), or a name looked up on `env.PATH`. */
  program: string;
  args: readonly string[];
  /** The complete environment; nothing is inherited from this process. */
  env: Record<string, string>;
  cwd?: string;
}

export interface InteractiveProcess {
  pid: number;
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  /** Resolves once the process has exited and its stdout and stderr have ended. */
  exited: Promise<ExitStatus>;
  /** Signals the process's group (it runs in its own); false when nothing was left to signal. */
  kill(signal?: NodeJS.Signals): boolean;
}

/** Starts a program with piped stdio; resolves once it runs, rejects when it could not be started (ENOENT...). */
export function spawnInteractive(options: InteractiveOptions): Promise<InteractiveProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(options.program, [...options.args], {
      shell: false,
      // Its own process group, so ending the session ends whatever it forked.
      detached: true,
      cwd: options.cwd,
      env: options.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      windowsHide: true,
    });
    let exitedResolve: (status: ExitStatus) => void = () => undefined;
    const exited = new Promise<ExitStatus>((r) => (exitedResolve = r));
    // 'close' (not 'exit'): all output has been read by then.
    child.once('close', (exitCode: number | null, signal: NodeJS.Signals | null) => exitedResolve({ exitCode, signal }));
    // A program that exits without reading its input closes the pipe; that
    // EPIPE is not a failure of the session, its exit status tells.
    child.stdin.on('error', () => undefined);
    child.once('error', (err) => {
      // Node's spawn errors carry the argv (which may hold secrets): only the code goes on.
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
      reject(Object.assign(new Error(`could not start ${options.program} (${code})`), { code }));
    });
    child.once('spawn', () => {
      child.removeAllListeners('error');
      child.on('error', () => undefined);
      const pid = child.pid as number;
      resolve({
        pid,
        stdin: child.stdin,
        stdout: child.stdout,
        stderr: child.stderr,
        exited,
        kill(signal: NodeJS.Signals = 'SIGKILL') {
          if (child.exitCode !== null || child.signalCode !== null) return false;
          return killProcessGroup(pid, signal);
        },
      });
    });
  });
}
