import { readFileSync } from 'node:fs';
import { spawnSupervised, type ExitStatus, type SupervisedProcess } from '@corral/exec';
import { sleep } from '../lib/stats';

// The process baseline: the same command spawned directly (own process
// group, output to a file, the same small environment), paused with a bare
// SIGSTOP/SIGCONT to the group. "Paused" means the kernel reports the
// leader stopped, as for the driver: a signal is delivered asynchronously.

export interface RawProcess {
  child: SupervisedProcess;
  exited: Promise<ExitStatus>;
  exit?: ExitStatus;
}

export async function startRawProcess(command: string[], env: Record<string, string>, cwd: string, logPath: string): Promise<RawProcess> {
  const [program, ...args] = command;
  const child = await spawnSupervised({ program, args, env, cwd, logPath });
  const proc: RawProcess = { child, exited: child.wait() };
  void proc.exited.then((status) => (proc.exit = status));
  return proc;
}

export async function killRawProcess(proc: RawProcess): Promise<void> {
  if (!proc.exit) proc.child.kill('SIGKILL');
  await proc.exited;
}

/** The scheduler state letter of /proc/<pid>/stat (R, S, T...), undefined once gone. */
export function schedulerState(pid: number): string | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return raw.slice(raw.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

export const isStopped = (pid: number): boolean => {
  const state = schedulerState(pid);
  return state === 'T' || state === 't';
};

async function until(ok: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await sleep(1);
  }
}

export async function rawStop(proc: RawProcess): Promise<void> {
  proc.child.kill('SIGSTOP');
  await until(() => isStopped(proc.child.pid), `process ${proc.child.pid} stopping`);
}

export async function rawContinue(proc: RawProcess): Promise<void> {
  proc.child.kill('SIGCONT');
  await until(() => !isStopped(proc.child.pid), `process ${proc.child.pid} continuing`);
}
