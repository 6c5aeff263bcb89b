import { readFileSync } from 'node:fs';

// Liveness and signalling of processes the agent may no longer be the parent
// of (after its own restart there is no child handle, only a pid).

/**
 * True when a process with this pid exists and has not exited. A zombie
 * (exited, not yet reaped by its parent) counts as exited.
 */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return readProcStat(pid)?.state !== 'Z';
}

/**
 * Sends `signal` to every process of the group led by `pgid`. Returns false
 * when the group no longer exists.
 */
export function killProcessGroup(pgid: number, signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
  if (!Number.isInteger(pgid) || pgid <= 1) throw new RangeError(`refusing to signal process group ${pgid}`);
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/**
 * When the process started, in clock ticks since boot (Linux /proc). A pid
 * can be reused after its process exits; comparing the start time recorded
 * at spawn with the current one tells the original process from a newcomer.
 * Undefined where /proc is not available or the process is gone.
 */
export function processStartTime(pid: number): string | undefined {
  return readProcStat(pid)?.startTime;
}

interface ProcStat {
  state: string;
  startTime: string;
}

function readProcStat(pid: number): ProcStat | undefined {
  let raw: string;
  try {
    raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may itself contain
  // spaces or parentheses, so fields are counted from the last ')'.
  const fields = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  // After the name: state is field 3, starttime field 22.
  return { state: fields[0], startTime: fields[19] };
}
