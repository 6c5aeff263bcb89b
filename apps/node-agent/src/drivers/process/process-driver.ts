import { readFileSync } from 'node:fs';
import { readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, UnavailableError } from '@corral/domain';
import { isProcessAlive, killProcessGroup, processStartTime, spawnInteractive, spawnSupervised, type ExitStatus, type SupervisedProcess } from '@corral/exec';
import type { Logger } from '@corral/logging';
import { ensurePrivateDir } from '../../state/atomic-file';
import { readFileRange, readFileTail, type LogRange } from '../../workloads/log-follow';
import type {
  DestroyOptions,
  Driver,
  DriverFingerprint,
  ExitResult,
  LabelledRuntime,
  LabelledRuntimesCapability,
  LogChunk,
  LogsCapability,
  PauseCapability,
  RecoverOutcome,
  StopOptions,
  TaskHandle,
  TaskSpec,
  TaskStatus,
} from '../driver';
import type { ExecSession, ExecSessionOptions, FileEntry, FilesCapability, InteractiveExecCapability, WriteFileOptions } from '../driver';
import { sessionOverProcess } from '../exec-session';
import { WorkloadRoot } from './workload-files';

// Nomad's raw_exec: the command runs as a plain host process of the agent's
// user, in its own process group, with no isolation. For development and
// tests; off unless AGENT_ENABLE_PROCESS_DRIVER=true.

export const PROCESS_DRIVER_NAME = 'process';

/** PATH given to a workload that sets none (the agent's own is not passed on). */
export const DEFAULT_WORKLOAD_PATH = '/usr/local/bin:/usr/bin:/bin';

export const UNKNOWN_EXIT_DETAIL =
  'exit code unknown: the process was re-adopted after an agent restart and only its parent can collect its exit status';

export interface ProcessDriverOptions {
  /** Holds one directory per workload: `work/` (its cwd) and `output.log`. */
  rootDir: string;
  logger: Logger;
  /** How often a re-adopted process is checked for exit. Default 500 ms. */
  adoptedPollMs?: number;
  /** After SIGKILL, how long to wait for the exit before giving up. Default 5 s. */
  killWaitMs?: number;
  /** How long pause/resume wait for the kernel to report the process stopped/running. Default 2 s. */
  pauseWaitMs?: number;
}

/** What the handle carries for this driver. */
interface ProcessState {
  pid: number;
  /** /proc start time at spawn, to tell the process from a later one with the same pid. */
  startTime?: string;
  taskDir: string;
  logPath: string;
}

/** A process this driver instance watches. */
interface Tracked {
  pid: number;
  startTime?: string;
  exited: Promise<ExitResult>;
  /** Set once it has exited. */
  result?: ExitResult;
  /** Present when this agent process spawned it; absent after re-adoption. */
  child?: SupervisedProcess;
}

// Workload ids become directory names.
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export class ProcessDriver implements Driver, LogsCapability, PauseCapability, InteractiveExecCapability, FilesCapability, LabelledRuntimesCapability {
  readonly name = PROCESS_DRIVER_NAME;
  /** No network namespace: a workload listens on its host ports itself. */
  readonly hostNetwork = true;
  private readonly tracked = new Map<string, Tracked>();
  private readonly adoptedPollMs: number;
  private readonly killWaitMs: number;
  private readonly pauseWaitMs: number;

  constructor(private readonly options: ProcessDriverOptions) {
    this.adoptedPollMs = options.adoptedPollMs ?? 500;
    this.killWaitMs = options.killWaitMs ?? 5000;
    this.pauseWaitMs = options.pauseWaitMs ?? 2000;
  }

  async fingerprint(): Promise<DriverFingerprint> {
    return { name: this.name, healthy: true, version: release(), detail: 'plain host processes, no isolation' };
  }

  async start(spec: TaskSpec): Promise<TaskHandle> {
    if (!SAFE_ID.test(spec.workloadId)) throw new InvalidArgumentError('workload id is not usable as a directory name', { field: 'spec.workloadId' });
    const [program, ...args] = spec.command;
    const taskDir = join(this.options.rootDir, spec.workloadId);
    const workDir = join(taskDir, 'work');
    const logPath = join(taskDir, 'output.log');
    await ensurePrivateDir(workDir);
    let child: SupervisedProcess;
    try {
      child = await spawnSupervised({ program, args, env: { PATH: DEFAULT_WORKLOAD_PATH, ...spec.env }, cwd: workDir, logPath });
    } catch (err) {
      // Node's spawn errors carry the full argv (spawnargs), which may hold
      // secrets; only the errno code is passed on.
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
      if (code === 'ENOENT' || code === 'EACCES') {
        throw new FailedPreconditionError(`cannot run ${JSON.stringify(program)} on this host (${code})`, { field: 'spec.command[0]' });
      }
      throw new UnavailableError(`could not start the process (${code})`);
    }
    const startTime = processStartTime(child.pid);
    const tracked: Tracked = { pid: child.pid, startTime, child, exited: child.wait().then(exitResultOf) };
    this.track(spec.workloadId, tracked);
    // The task directory is the process's label: with this file an orphaned
    // directory (its agent record lost) still says which process is its.
    await writeFile(join(taskDir, TASK_FILE), JSON.stringify({ pid: child.pid, startTime }), { mode: 0o600 }).catch((err) =>
      this.options.logger.warn('could not record the task file of a workload', { workloadId: spec.workloadId, err }),
    );
    const state: ProcessState = { pid: child.pid, startTime, taskDir, logPath };
    return { driver: this.name, workloadId: spec.workloadId, displayId: String(child.pid), state: { ...state } };
  }

  async wait(handle: TaskHandle): Promise<ExitResult> {
    return this.attached(handle).exited;
  }

  async stop(handle: TaskHandle, options: StopOptions): Promise<void> {
    const tracked = this.attached(handle);
    if (tracked.result) return;
    this.signalGroup(tracked, options.signal);
    // A paused (SIGSTOPped) group would only act on the signal once
    // continued: thaw it, so it can shut down cleanly within the grace period.
    this.signalGroup(tracked, 'SIGCONT');
    if (await settlesWithin(tracked.exited, options.timeoutMs)) return;
    this.options.logger.warn('workload ignored its stop signal: killing it', { workloadId: handle.workloadId, signal: options.signal, timeoutMs: options.timeoutMs });
    this.signalGroup(tracked, 'SIGKILL');
    if (!(await settlesWithin(tracked.exited, this.killWaitMs))) {
      throw new UnavailableError(`process ${tracked.pid} did not exit after SIGKILL`);
    }
  }

  async destroy(handle: TaskHandle, options: DestroyOptions): Promise<void> {
    const state = stateOf(handle);
    const status = await this.inspect(handle);
    if (status.running) {
      if (!options.force) throw new FailedPreconditionError(`workload ${handle.workloadId} is still running`);
      const tracked = this.tracked.get(handle.workloadId) ?? this.adopt(handle.workloadId, state);
      await this.stop(handle, { signal: 'SIGKILL', timeoutMs: this.killWaitMs }).catch(() => undefined);
      if (!tracked.result) throw new UnavailableError(`process ${state.pid} did not exit after SIGKILL`);
    }
    this.tracked.delete(handle.workloadId);
    await rm(state.taskDir, { recursive: true, force: true });
  }

  /** Every task directory under the root (one per workload id), with whether its process still runs. */
  async listLabelled(): Promise<LabelledRuntime[]> {
    let names: string[];
    try {
      names = await readdir(this.options.rootDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const found: LabelledRuntime[] = [];
    for (const workloadId of names.filter((n) => SAFE_ID.test(n))) {
      const taskDir = join(this.options.rootDir, workloadId);
      const info = await stat(taskDir).catch(() => undefined);
      if (!info?.isDirectory()) continue;
      const task = await readTaskFile(taskDir);
      found.push({
        workloadId,
        running: task !== undefined && isSameProcessAlive(task),
        createdAt: info.birthtimeMs > 0 ? info.birthtime : info.mtime,
        displayId: task ? String(task.pid) : '',
      });
    }
    return found;
  }

  /** Kills the task directory's process group (when its recorded process still runs) and removes the directory. */
  async removeLabelled(workloadId: string): Promise<void> {
    if (!SAFE_ID.test(workloadId)) throw new InvalidArgumentError('workload id is not usable as a directory name', { field: 'workloadId' });
    const taskDir = join(this.options.rootDir, workloadId);
    const task = await readTaskFile(taskDir);
    if (task && isSameProcessAlive(task)) {
      killProcessGroup(task.pid, 'SIGKILL');
      const deadline = Date.now() + this.killWaitMs;
      while (isSameProcessAlive(task) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      if (isSameProcessAlive(task)) throw new UnavailableError(`process ${task.pid} did not exit after SIGKILL`);
    }
    this.tracked.delete(workloadId);
    await rm(taskDir, { recursive: true, force: true });
  }

  async inspect(handle: TaskHandle): Promise<TaskStatus> {
    const tracked = this.tracked.get(handle.workloadId);
    if (tracked?.result) return { running: false, exit: tracked.result };
    if (isSameProcessAlive(stateOf(handle))) return { running: true };
    return { running: false, exit: undefined };
  }

  async recover(handle: TaskHandle): Promise<RecoverOutcome> {
    if (this.tracked.has(handle.workloadId)) return { recovered: true };
    const state = stateOf(handle);
    if (!isSameProcessAlive(state)) return { recovered: false, reason: `process ${state.pid} is gone` };
    this.adopt(handle.workloadId, state);
    return { recovered: true };
  }

  /**
   * Freezes the whole process group with SIGSTOP (which cannot be caught or
   * ignored) and resolves once the kernel reports the leader stopped.
   */
  async pause(handle: TaskHandle): Promise<void> {
    const tracked = this.live(handle);
    this.signalGroup(tracked, 'SIGSTOP');
    if (!(await this.reachesState(tracked, (state) => state === 'T' || state === 't'))) {
      throw new UnavailableError(`process ${tracked.pid} did not stop after SIGSTOP`);
    }
  }

  /** Thaws the process group with SIGCONT and resolves once the leader is no longer stopped. */
  async resume(handle: TaskHandle): Promise<void> {
    const tracked = this.live(handle);
    this.signalGroup(tracked, 'SIGCONT');
    if (!(await this.reachesState(tracked, (state) => state !== 'T' && state !== 't'))) {
      throw new UnavailableError(`process ${tracked.pid} did not continue after SIGCONT`);
    }
  }

  async readLogs(handle: TaskHandle, options: { tailBytes: number }): Promise<LogChunk> {
    return readFileTail(stateOf(handle).logPath, options.tailBytes);
  }

  /** Up to `maxBytes` of the log file from `offset` (for following it); an absent file is empty. */
  async readLogsFrom(handle: TaskHandle, options: { offset: number; maxBytes: number }): Promise<LogRange> {
    return readFileRange(stateOf(handle).logPath, options);
  }

  /**
   * Watches a process this agent process did not spawn: there is no child
   * handle to report its exit, so its liveness is polled, and its exit code
   * is unknown.
   */
  /**
   * A host process beside the workload: same user, the workload's own
   * environment (read from /proc/<pid>/environ, so it is what the workload
   * was started with, never the agent's), its working directory, its own
   * process group. No isolation, exactly like the workload itself: this
   * driver is for development and tests. No TTY: allocating a terminal would
   * need a native pty module.
   */
  async execSession(handle: TaskHandle, argv: readonly string[], options: ExecSessionOptions): Promise<ExecSession> {
    if (argv.length === 0) throw new InvalidArgumentError('exec needs a command', { field: 'command' });
    if (options.tty) throw new FailedPreconditionError('the process driver cannot allocate a terminal; run without a TTY');
    const tracked = this.live(handle);
    const cwd = await this.rootOf(handle).workingDir(options.workingDir);
    const env = { ...workloadEnv(tracked.pid), ...options.env };
    try {
      return sessionOverProcess(await spawnInteractive({ program: argv[0], args: argv.slice(1), env, cwd }));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
      throw new FailedPreconditionError(`cannot run ${JSON.stringify(argv[0])} on this host (${code})`, { field: 'command[0]' });
    }
  }

  readFile(handle: TaskHandle, path: string): Promise<AsyncIterable<Buffer>> {
    return this.rootOf(handle).readFile(path);
  }

  writeFile(handle: TaskHandle, path: string, content: AsyncIterable<Buffer>, options: WriteFileOptions): Promise<{ bytes: number }> {
    return this.rootOf(handle).writeFile(path, content, options);
  }

  listDirectory(handle: TaskHandle, path: string): Promise<FileEntry[]> {
    return this.rootOf(handle).listDirectory(path);
  }

  /** The workload's files: its working directory. */
  private rootOf(handle: TaskHandle): WorkloadRoot {
    return new WorkloadRoot(join(stateOf(handle).taskDir, 'work'));
  }

  private adopt(workloadId: string, state: ProcessState): Tracked {
    let timer: NodeJS.Timeout | undefined;
    const exited = new Promise<ExitResult>((resolve) => {
      timer = setInterval(() => {
        if (isSameProcessAlive(state)) return;
        clearInterval(timer);
        resolve({ exitCode: undefined, detail: UNKNOWN_EXIT_DETAIL });
      }, this.adoptedPollMs);
      // Polling must not keep a stopping agent alive.
      timer.unref();
    });
    const tracked: Tracked = { pid: state.pid, startTime: state.startTime, exited };
    this.track(workloadId, tracked);
    return tracked;
  }

  private track(workloadId: string, tracked: Tracked): void {
    this.tracked.set(workloadId, tracked);
    void tracked.exited.then((result) => (tracked.result = result));
  }

  private attached(handle: TaskHandle): Tracked {
    const tracked = this.tracked.get(handle.workloadId);
    if (!tracked) throw new FailedPreconditionError(`workload ${handle.workloadId} is not attached to this agent; recover it first`);
    return tracked;
  }

  /** The tracked process of a task that has not exited. */
  private live(handle: TaskHandle): Tracked {
    const tracked = this.attached(handle);
    if (tracked.result || !isSameProcessAlive(tracked)) throw new FailedPreconditionError(`workload ${handle.workloadId} has exited`);
    return tracked;
  }

  /**
   * Polls the leader's scheduler state (/proc/<pid>/stat) until `ok` holds.
   * Signals are delivered asynchronously; this makes pause and resume mean
   * "done" when they return. True at once where /proc is missing.
   */
  private async reachesState(tracked: Tracked, ok: (state: string) => boolean): Promise<boolean> {
    const deadline = Date.now() + this.pauseWaitMs;
    for (;;) {
      const state = schedulerState(tracked.pid);
      if (state === undefined || ok(state)) return true;
      if (tracked.result || Date.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  private signalGroup(tracked: Tracked, signal: NodeJS.Signals): void {
    if (tracked.child) {
      tracked.child.kill(signal);
      return;
    }
    // An adopted pid is checked again right before signalling: once it has
    // exited the number may belong to an unrelated process group.
    if (isSameProcessAlive({ pid: tracked.pid, startTime: tracked.startTime })) killProcessGroup(tracked.pid, signal);
  }
}

/** Written into each task directory at start: which process the directory belongs to. */
const TASK_FILE = 'task.json';

async function readTaskFile(taskDir: string): Promise<{ pid: number; startTime?: string } | undefined> {
  try {
    const data = JSON.parse(await readFile(join(taskDir, TASK_FILE), 'utf8')) as { pid?: unknown; startTime?: unknown };
    if (typeof data.pid !== 'number' || data.pid <= 1) return undefined;
    return { pid: data.pid, ...(typeof data.startTime === 'string' ? { startTime: data.startTime } : {}) };
  } catch {
    return undefined;
  }
}

function stateOf(handle: TaskHandle): ProcessState {
  const state = handle.state as Partial<ProcessState>;
  if (typeof state.pid !== 'number' || typeof state.taskDir !== 'string' || typeof state.logPath !== 'string') {
    throw new FailedPreconditionError(`handle of workload ${handle.workloadId} is not a process driver handle`);
  }
  return state as ProcessState;
}

/** The environment a process was started with; PATH alone when /proc cannot tell. */
function workloadEnv(pid: number): Record<string, string> {
  try {
    const env: Record<string, string> = {};
    for (const entry of readFileSync(`/proc/${pid}/environ`).toString('utf8').split('\0')) {
      const eq = entry.indexOf('=');
      if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
    }
    return env;
  } catch {
    return { PATH: DEFAULT_WORKLOAD_PATH };
  }
}

function isSameProcessAlive(state: { pid: number; startTime?: string }): boolean {
  if (!isProcessAlive(state.pid)) return false;
  // Where /proc is missing on either side, the pid is all there is to go by.
  const now = processStartTime(state.pid);
  return state.startTime === undefined || now === undefined || now === state.startTime;
}

/** The state letter of /proc/<pid>/stat (R, S, D, T for stopped, Z...), undefined without /proc or once gone. */
function schedulerState(pid: number): string | undefined {
  let raw: string;
  try {
    raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may contain spaces.
  return raw.slice(raw.lastIndexOf(')') + 2).split(' ')[0];
}

function exitResultOf(status: ExitStatus): ExitResult {
  if (status.signal) return { exitCode: undefined, signal: status.signal };
  return { exitCode: status.exitCode ?? undefined };
}

async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
