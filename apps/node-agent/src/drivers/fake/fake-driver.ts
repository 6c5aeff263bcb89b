import { FailedPreconditionError } from '@corral/domain';
import type {
  DestroyOptions,
  Driver,
  DriverFingerprint,
  ExitResult,
  LogChunk,
  LogsCapability,
  PauseCapability,
  RecoverOutcome,
  StopOptions,
  TaskHandle,
  TaskSpec,
  TaskStatus,
} from '../driver';

// A driver for unit tests of the supervisor and the gRPC layer: no real
// processes, outcomes scripted per workload. Tasks live on a FakeMachine that
// outlives driver instances, so a test can "restart the agent" (a new driver
// over the same machine) and exercise recover.

export interface FakeScript {
  /** start() rejects with this. */
  startError?: Error;
  /** The task exits by itself after this long... */
  exitAfterMs?: number;
  /** ...with this code (default 0). */
  exitCode?: number;
  /**
   * How the task reacts to stop(): `exit` (default) ends it at once with
   * `stopExitCode`; `ignore-signal` needs the forced kill after the timeout;
   * `hang` makes stop() never return and the task never exit.
   */
  onStop?: 'exit' | 'ignore-signal' | 'hang';
  /** Exit code after a stop signal (default 143, as after SIGTERM). */
  stopExitCode?: number;
  /** What readLogs returns. */
  logs?: string;
}

interface FakeTask {
  spec: TaskSpec;
  paused?: boolean;
  script: FakeScript;
  result?: ExitResult;
  exited: Promise<ExitResult>;
  finish(result: ExitResult): void;
  timer?: NodeJS.Timeout;
}

/** The pretend host the fake driver's tasks run on. */
export class FakeMachine {
  readonly tasks = new Map<string, FakeTask>();
  private readonly scripts = new Map<string, FakeScript>();
  private readonly destroyFailures = new Map<string, Error[]>();
  private nextId = 1;

  /** Makes the next `times` destroy() calls of `workloadId` reject with `error` (before doing anything). */
  failDestroy(workloadId: string, error: Error, times = 1): this {
    this.destroyFailures.set(workloadId, Array.from({ length: times }, () => error));
    return this;
  }

  /** The scripted destroy failure due now, if any (consumed). */
  takeDestroyFailure(workloadId: string): Error | undefined {
    return this.destroyFailures.get(workloadId)?.shift();
  }

  /** Sets the outcome of the next start of `workloadId`. */
  script(workloadId: string, script: FakeScript): this {
    this.scripts.set(workloadId, script);
    return this;
  }

  scriptFor(workloadId: string): FakeScript {
    return this.scripts.get(workloadId) ?? {};
  }

  /** Makes a running task exit now, as if it ended by itself. */
  exit(workloadId: string, result: ExitResult): void {
    this.tasks.get(workloadId)?.finish(result);
  }

  /** Makes a task vanish without a trace (as after a host reboot). */
  vanish(workloadId: string): void {
    const task = this.tasks.get(workloadId);
    if (task?.timer) clearTimeout(task.timer);
    this.tasks.delete(workloadId);
  }

  /** The spec the task was last started with (env with port variables, ports...). */
  specOf(workloadId: string): TaskSpec | undefined {
    return this.tasks.get(workloadId)?.spec;
  }

  isPaused(workloadId: string): boolean {
    return this.tasks.get(workloadId)?.paused === true;
  }

  isRunning(workloadId: string): boolean {
    const task = this.tasks.get(workloadId);
    return task !== undefined && task.result === undefined;
  }

  newId(): string {
    return `fake-${this.nextId++}`;
  }
}

export interface FakeDriverOptions {
  /** Registered under this name; unit tests usually pose as `process`. */
  name?: string;
  machine?: FakeMachine;
  healthy?: boolean;
  /** Pose as a driver whose tasks share the host's network (like `process`). */
  hostNetwork?: boolean;
}

export interface FakeCall {
  method: 'start' | 'wait' | 'stop' | 'destroy' | 'inspect' | 'recover' | 'readLogs' | 'pause' | 'resume';
  workloadId: string;
  options?: unknown;
}

export class FakeDriver implements Driver, LogsCapability {
  readonly name: string;
  readonly machine: FakeMachine;
  readonly calls: FakeCall[] = [];
  readonly hostNetwork: boolean;
  private readonly attached = new Set<string>();
  private readonly healthy: boolean;

  constructor(options: FakeDriverOptions = {}) {
    this.name = options.name ?? 'fake';
    this.machine = options.machine ?? new FakeMachine();
    this.healthy = options.healthy ?? true;
    this.hostNetwork = options.hostNetwork ?? false;
  }

  async fingerprint(): Promise<DriverFingerprint> {
    return { name: this.name, healthy: this.healthy, version: 'fake', detail: 'scripted test driver' };
  }

  async start(spec: TaskSpec): Promise<TaskHandle> {
    this.calls.push({ method: 'start', workloadId: spec.workloadId });
    const script = this.machine.scriptFor(spec.workloadId);
    if (script.startError) throw script.startError;
    let finish!: (result: ExitResult) => void;
    const exited = new Promise<ExitResult>((resolve) => (finish = resolve));
    const task: FakeTask = {
      spec,
      script,
      exited,
      finish: (result) => {
        if (task.result) return;
        if (task.timer) clearTimeout(task.timer);
        task.result = result;
        finish(result);
      },
    };
    if (script.exitAfterMs !== undefined) {
      task.timer = setTimeout(() => task.finish({ exitCode: script.exitCode ?? 0 }), script.exitAfterMs);
    }
    this.machine.tasks.set(spec.workloadId, task);
    this.attached.add(spec.workloadId);
    return { driver: this.name, workloadId: spec.workloadId, displayId: this.machine.newId(), state: {} };
  }

  async wait(handle: TaskHandle): Promise<ExitResult> {
    this.calls.push({ method: 'wait', workloadId: handle.workloadId });
    return this.task(handle).exited;
  }

  async stop(handle: TaskHandle, options: StopOptions): Promise<void> {
    this.calls.push({ method: 'stop', workloadId: handle.workloadId, options });
    const task = this.task(handle);
    if (task.result) return;
    const onStop = task.script.onStop ?? 'exit';
    if (onStop === 'hang') return new Promise<void>(() => undefined);
    if (onStop === 'ignore-signal') {
      await new Promise((r) => setTimeout(r, options.timeoutMs));
      task.finish({ exitCode: undefined, signal: 'SIGKILL' });
    } else {
      task.finish({ exitCode: task.script.stopExitCode ?? 143 });
    }
    await task.exited;
  }

  async destroy(handle: TaskHandle, options: DestroyOptions): Promise<void> {
    this.calls.push({ method: 'destroy', workloadId: handle.workloadId, options });
    const failure = this.machine.takeDestroyFailure(handle.workloadId);
    if (failure) throw failure;
    if (this.machine.isRunning(handle.workloadId)) {
      if (!options.force) throw new FailedPreconditionError(`workload ${handle.workloadId} is still running`);
      this.machine.exit(handle.workloadId, { exitCode: undefined, signal: 'SIGKILL' });
    }
    this.machine.vanish(handle.workloadId);
    this.attached.delete(handle.workloadId);
  }

  async inspect(handle: TaskHandle): Promise<TaskStatus> {
    this.calls.push({ method: 'inspect', workloadId: handle.workloadId });
    const task = this.machine.tasks.get(handle.workloadId);
    if (task && !task.result) return { running: true };
    return { running: false, exit: task?.result };
  }

  async recover(handle: TaskHandle): Promise<RecoverOutcome> {
    this.calls.push({ method: 'recover', workloadId: handle.workloadId });
    if (!this.machine.isRunning(handle.workloadId)) return { recovered: false, reason: `fake task ${handle.displayId} is gone` };
    this.attached.add(handle.workloadId);
    return { recovered: true };
  }

  async readLogs(handle: TaskHandle, options: { tailBytes: number }): Promise<LogChunk> {
    this.calls.push({ method: 'readLogs', workloadId: handle.workloadId, options });
    const all = Buffer.from(this.machine.tasks.get(handle.workloadId)?.script.logs ?? '');
    const data = all.subarray(Math.max(0, all.length - options.tailBytes));
    return { data, truncated: data.length < all.length };
  }

  protected task(handle: TaskHandle): FakeTask {
    const task = this.machine.tasks.get(handle.workloadId);
    if (!task || !this.attached.has(handle.workloadId)) {
      throw new FailedPreconditionError(`workload ${handle.workloadId} is not attached to this driver`);
    }
    return task;
  }
}

/** The fake driver with the pause capability: a paused task stays paused until resumed or stopped. */
export class PausableFakeDriver extends FakeDriver implements PauseCapability {
  async pause(handle: TaskHandle): Promise<void> {
    this.calls.push({ method: 'pause', workloadId: handle.workloadId });
    const task = this.task(handle);
    if (task.result) throw new FailedPreconditionError(`workload ${handle.workloadId} has exited`);
    task.paused = true;
  }

  async resume(handle: TaskHandle): Promise<void> {
    this.calls.push({ method: 'resume', workloadId: handle.workloadId });
    const task = this.task(handle);
    if (task.result) throw new FailedPreconditionError(`workload ${handle.workloadId} has exited`);
    task.paused = false;
  }
}
