import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { killProcessGroup } from '../process/process-group';

// Long-running workloads (process driver, qemu). Unlike the executor's
// commands, their output goes straight to files, not through the agent, and
// they run in their own process group with no pipe or handle tying them to
// the agent, so they outlive an agent restart.

interface SupervisedOptionsBase {
  /** Absolute path, or a name looked up on `env.PATH`. */
  program: string;
  args: readonly string[];
  /**
   * The complete environment of the process. Nothing is inherited from the
   * agent, whose environment holds credentials.
   */
  env: Record<string, string>;
  cwd: string;
  /**
   * Own process group (default true), so the whole tree can be signalled
   * and a Ctrl-C aimed at the agent's terminal does not reach it.
   */
  detached?: boolean;
}

/** stdout and stderr appended to one file. */
export interface CombinedLogOptions extends SupervisedOptionsBase {
  logPath: string;
}

/** stdout and stderr appended to separate files. */
export interface SplitLogOptions extends SupervisedOptionsBase {
  stdoutPath: string;
  stderrPath: string;
}

export type SupervisedOptions = CombinedLogOptions | SplitLogOptions;

export interface ExitStatus {
  /** null when ended by a signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
}

export interface SupervisedProcess {
  pid: number;
  /** Resolves once the process has exited. */
  wait(): Promise<ExitStatus>;
  /**
   * Signals the process group (or the process alone when not detached).
   * False when nothing was left to signal.
   */
  kill(signal?: NodeJS.Signals): boolean;
}

/** Log files are readable by the agent's user only: output can hold secrets. */
const LOG_FILE_MODE = 0o600;

/**
 * Starts a program and resolves once it is running (rejects when it could
 * not be started, e.g. ENOENT).
 */
export function spawnSupervised(options: SupervisedOptions): Promise<SupervisedProcess> {
  const detached = options.detached ?? true;
  const outPath = 'logPath' in options ? options.logPath : options.stdoutPath;
  const errPath = 'logPath' in options ? options.logPath : options.stderrPath;
  const outFd = openSync(outPath, 'a', LOG_FILE_MODE);
  const errFd = errPath === outPath ? outFd : openSync(errPath, 'a', LOG_FILE_MODE);
  const closeFds = () => {
    closeSync(outFd);
    if (errFd !== outFd) closeSync(errFd);
  };

  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(options.program, [...options.args], {
        shell: false,
        detached,
        cwd: options.cwd,
        env: options.env,
        stdio: ['ignore', outFd, errFd],
      });
    } catch (err) {
      closeFds();
      reject(err);
      return;
    }
    // The child holds its own copies of the descriptors now.
    closeFds();

    const exited = new Promise<ExitStatus>((resolveExit) => {
      child.once('exit', (exitCode, signal) => resolveExit({ exitCode, signal }));
    });
    child.once('error', reject);
    child.once('spawn', () => {
      child.removeListener('error', reject);
      // Errors after the start (a failed kill) are reported by kill().
      child.on('error', () => undefined);
      // The agent's event loop must not wait for its workloads.
      child.unref();
      const pid = child.pid as number;
      resolve({
        pid,
        wait: () => exited,
        kill(signal: NodeJS.Signals = 'SIGTERM') {
          // The group outlives its leader while any member runs, and Linux
          // does not hand out a pid still in use as a group id, so signalling
          // the group after the leader exited is safe and reaches leftovers.
          if (detached) return killProcessGroup(pid, signal);
          if (child.exitCode !== null || child.signalCode !== null) return false;
          return child.kill(signal);
        },
      });
    });
  });
}
