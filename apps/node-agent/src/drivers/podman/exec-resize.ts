import { constants } from 'node:fs';
import { lstat, open, readFile, readdir } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { EXEC_MARKER_VARIABLE } from './exec-reaper';

// Window size changes of a `podman exec --tty` session. The podman client
// passes a size on only from a terminal of its own (it reads it on
// SIGWINCH), and the agent gives it pipes. But the size is conmon's to set
// either way: conmon holds the pseudo-terminal of the exec session and
// reads resize requests from a FIFO, `<bundle>/ctl`, as lines
// `1 <rows> <columns>` — the same control file podman itself writes to on
// a resize. conmon then sets the size on the terminal and the kernel sends
// the command SIGWINCH. No program is run for this (no shell, no stty):
// the session's command is found by the marker in its environment (see
// exec-reaper.ts), its parent must be conmon, and conmon's own argv names
// the container (`-c`, checked against ours) and the bundle (`-b`).

/** conmon's control FIFO message type for a window resize. */
const RESIZE_MESSAGE = 1;
/** A terminal size the kernel takes (struct winsize holds unsigned shorts). */
const MAX_DIMENSION = 0xffff;

export interface ConmonSession {
  /** The container conmon serves (`-c`, a full id). */
  containerId: string;
  /** The exec session's bundle dir (`-b`), where conmon keeps `ctl`. */
  bundle: string;
}

/** conmon's container and bundle from its argv (NUL-separated /proc cmdline); undefined when it is not conmon's. */
export function parseConmonCmdline(cmdline: Buffer | string): ConmonSession | undefined {
  const argv = cmdline.toString().split('\0');
  if (!argv[0] || !/(^|\/)conmon$/.test(argv[0])) return undefined;
  const valueOf = (flag: string) => {
    const at = argv.indexOf(flag);
    return at >= 0 ? argv[at + 1] : undefined;
  };
  const containerId = valueOf('-c');
  const bundle = valueOf('-b');
  if (!containerId || !/^[0-9a-f]{12,64}$/.test(containerId) || !bundle || !isAbsolute(bundle) || bundle.split('/').includes('..')) return undefined;
  return { containerId, bundle };
}

/** The line that asks conmon for `rows` × `columns`. */
export function resizeMessage(columns: number, rows: number): string {
  for (const [name, value] of [['columns', columns], ['rows', rows]] as const) {
    if (!Number.isInteger(value) || value < 1 || value > MAX_DIMENSION) throw new RangeError(`${name} must be an integer from 1 to ${MAX_DIMENSION}`);
  }
  return `${RESIZE_MESSAGE} ${rows} ${columns}\n`;
}

/**
 * The conmon of the exec session whose command carries `marker`: the marked
 * process whose parent is a conmon serving `containerId`. Undefined while
 * the command is not running yet (or no more).
 */
export async function findConmonSession(marker: string, containerId: string, procDir = '/proc'): Promise<ConmonSession | undefined> {
  const entry = Buffer.from(`${EXEC_MARKER_VARIABLE}=${marker}\0`);
  const afterNul = Buffer.concat([Buffer.from([0]), entry]);
  let names: string[];
  try {
    names = await readdir(procDir);
  } catch {
    return undefined;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const environ = await readFile(join(procDir, name, 'environ'));
      if (environ.indexOf(entry) !== 0 && !environ.includes(afterNul)) continue;
      // Field 4 of stat, after the command name in parentheses (which may hold spaces).
      const stat = await readFile(join(procDir, name, 'stat'), 'utf8');
      const parent = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1];
      if (!parent || !/^\d+$/.test(parent)) continue;
      const session = parseConmonCmdline(await readFile(join(procDir, parent, 'cmdline')));
      if (session && (session.containerId.startsWith(containerId) || containerId.startsWith(session.containerId))) return session;
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return undefined;
}

/** Sends one resize to conmon's control FIFO; never blocks (a FIFO nobody reads is an error, not a wait). */
export async function writeResize(bundle: string, columns: number, rows: number): Promise<void> {
  const message = resizeMessage(columns, rows);
  const ctl = join(bundle, 'ctl');
  if (!(await lstat(ctl)).isFIFO()) throw new Error(`${ctl} is not conmon's control FIFO`);
  const fifo = await open(ctl, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  try {
    await fifo.write(message);
  } finally {
    await fifo.close();
  }
}

export interface ExecResizerOptions {
  /** How long the first resize waits for the command to be running. Default 10 s. */
  findTimeoutMs?: number;
  pollMs?: number;
  procDir?: string;
  onError?: (err: unknown) => void;
}

/**
 * `resize(columns, rows)` for one session: resizes run one at a time and
 * only the latest pending size is sent (a burst of window drags ends at
 * the last one). The first finds conmon, waiting for the command to start.
 */
export function execResizer(marker: string, containerId: string, options: ExecResizerOptions = {}): (columns: number, rows: number) => void {
  const findTimeoutMs = options.findTimeoutMs ?? 10_000;
  const pollMs = options.pollMs ?? 50;
  let session: Promise<ConmonSession | undefined> | undefined;
  let pending: { columns: number; rows: number } | undefined;
  let running = false;

  const locate = async (): Promise<ConmonSession | undefined> => {
    const deadline = Date.now() + findTimeoutMs;
    for (;;) {
      const found = await findConmonSession(marker, containerId, options.procDir);
      if (found || Date.now() >= deadline) return found;
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  };

  const drain = async () => {
    running = true;
    try {
      while (pending) {
        const size = pending;
        pending = undefined;
        session ??= locate();
        const found = await session;
        if (!found) {
          // Not found in time: the next resize looks again.
          session = undefined;
          throw new Error('the exec session has no conmon to resize (has the command ended?)');
        }
        await writeResize(found.bundle, size.columns, size.rows);
      }
    } catch (err) {
      pending = undefined;
      options.onError?.(err);
    } finally {
      running = false;
    }
  };

  return (columns, rows) => {
    try {
      resizeMessage(columns, rows);
    } catch {
      // A size the terminal cannot take (0 means "unknown") changes nothing.
      return;
    }
    pending = { columns, rows };
    if (!running) void drain();
  };
}
