import { constants as osConstants } from 'node:os';
import {
  FailedPreconditionError,
  NotFoundError,
  TERMINAL_STATES,
  UnavailableError,
  canTransition,
  instanceStateToProto,
  isCorralError,
  pauseResumeAction,
  type InstanceState,
} from '@corral/domain';
import { Topics, type EventBus } from '@corral/events';
import type { Logger } from '@corral/logging';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  hasLabelledRuntimes,
  hasLogs,
  hasPause,
  hasSnapshot,
  type Driver,
  type ExitResult,
  type LabelledRuntime,
  type LogChunk,
  type PortMapping,
  type SnapshotProgress,
  type SnapshotResult,
  type TaskHandle,
  type TaskSpec,
} from '../drivers/driver';
import type { DriverRegistry } from '../drivers/driver-registry';
import { PortAllocator, portEnv } from '../ports';
import type { VolumeManager } from '../volumes';
import { rootDiskBaseOf } from '../volumes/root-disk-base';
import { canFollowLogs } from './log-follow';
import { RecordStore } from './record-store';
import { validateSpec, type WorkloadSpecInput } from './spec-validation';
import { SnapshotStore, checkSnapshotId, checkSourceWorkloadId, newSnapshotId, type SnapshotInfo } from './workload-snapshots';
import { LOST_REASON, viewOf, wireExitCode, type WorkloadRecord, type WorkloadView } from './workload-record';

/** The part of the event bus the supervisor needs; tests pass a recorder. */
export type StateEventPublisher = Pick<EventBus, 'publish'>;

export interface WorkloadSupervisorOptions {
  hostId: string;
  /** Records live in `<stateDir>/workloads`. */
  stateDir: string;
  drivers: DriverRegistry;
  bus: StateEventPublisher;
  logger: Logger;
  /** The host's current JWT, sent with every state change so the scheduler knows the event is this host's. */
  hostToken?: () => string;
  /** Host ports for the workloads' routes. Default: an allocator over `<stateDir>/ports.json` and the default range. */
  ports?: PortAllocator;
  /**
   * Workloads' root-disk clones: made before a start whose spec names
   * vm.rootDisk, or of a unikernel's image (without `cloneImage` such a
   * start fails), removed at teardown. Absent: the agent makes none.
   */
  volumes?: Pick<VolumeManager, 'remove'> & Partial<Pick<VolumeManager, 'cloneImage'>>;
  /** Grace period of a stop that names none. Default 10 s. */
  defaultStopTimeoutMs?: number;
  /** Extra time a driver gets, past the grace period, to report the forced kill. Default 10 s. */
  stopOverrunMs?: number;
  now?: () => Date;
}

export interface StopRequest {
  timeoutMs?: number;
  signal?: NodeJS.Signals;
}

export interface DestroyRequest {
  /** Stop a live workload first (grace period, then kill) instead of refusing. */
  force?: boolean;
  /** Grace period of that stop. Default: the supervisor's. */
  timeoutMs?: number;
}

export interface RecoverySummary {
  /** Still running and watched again. */
  readopted: string[];
  /** Gone while the agent was down: now failed with reason "lost". */
  lost: string[];
  /** Already finished before the restart. */
  finished: string[];
  /** Cut short mid-teardown by the restart: being torn down again. */
  tearingDown: string[];
}

/**
 * A workload on its way out: nothing starts, stops or pauses it any more,
 * and an exit the driver reports now changes nothing.
 */
const LEAVING: ReadonlySet<InstanceState> = new Set(['tearing_down', 'retired']);

/** Default tail of ReadLogs, and the most it returns (a gRPC answer is capped at 4 MiB). */
export const DEFAULT_LOG_TAIL_BYTES = 1024 * 1024;
export const MAX_LOG_TAIL_BYTES = 3 * 1024 * 1024;
/** How often a followed log is polled for new output, and the most one stream message carries. */
export const LOG_FOLLOW_POLL_MS = 200;
export const LOG_FOLLOW_CHUNK_BYTES = 64 * 1024;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

interface Entry {
  record: WorkloadRecord;
  /** Settles once the start call (driver.start and its transitions) is over. */
  starting?: Promise<void>;
  /** The stop in progress, shared by concurrent stop calls. */
  stopping?: Promise<void>;
  /** The teardown in progress, shared by concurrent destroy calls. */
  destroying?: Promise<WorkloadView>;
  /** The pause or resume in progress; they run one at a time. */
  pausing?: Promise<unknown>;
  /** Settles once the task's exit has been recorded. */
  exitRecorded?: Promise<void>;
  /** Persist-then-publish steps, in transition order. */
  writes: Promise<void>;
}

type RecordChange = Partial<Omit<WorkloadRecord, 'version' | 'spec' | 'seq' | 'updatedAt'>> & { state: InstanceState };

/**
 * Owns the workloads of this agent: drives them through their drivers,
 * records every state change (persist, then publish WorkloadStateChanged),
 * and picks them up again after an agent restart. Stopping the supervisor
 * leaves workloads running.
 */
export class WorkloadSupervisor {
  private readonly entries = new Map<string, Entry>();
  private readonly store: RecordStore;
  private readonly ports: PortAllocator;
  private readonly snapshots: SnapshotStore;
  private readonly logger: Logger;
  private readonly now: () => Date;
  private readonly defaultStopTimeoutMs: number;
  private readonly stopOverrunMs: number;
  private initialised = false;
  private closed = false;

  constructor(private readonly options: WorkloadSupervisorOptions) {
    this.logger = options.logger.child({ component: 'workload-supervisor' });
    this.store = new RecordStore(options.stateDir, this.logger);
    this.snapshots = new SnapshotStore(options.stateDir);
    this.ports = options.ports ?? new PortAllocator({ stateDir: options.stateDir, logger: options.logger });
    this.now = options.now ?? (() => new Date());
    this.defaultStopTimeoutMs = options.defaultStopTimeoutMs ?? 10_000;
    this.stopOverrunMs = options.stopOverrunMs ?? 10_000;
  }

  /**
   * Loads the persisted records and re-attaches to workloads that still run;
   * the ones that vanished while the agent was down become failed ("lost").
   * Call once, before serving requests.
   */
  async recover(): Promise<RecoverySummary> {
    if (this.initialised) throw new Error('recover() may only be called once');
    this.initialised = true;
    await this.store.init();
    await this.ports.init();
    const summary: RecoverySummary = { readopted: [], lost: [], finished: [], tearingDown: [] };
    for (const record of await this.store.loadAll()) {
      const entry: Entry = { record, writes: Promise.resolve() };
      this.entries.set(record.spec.workloadId, entry);
      if (LEAVING.has(record.state)) {
        // The agent went down mid-teardown: every step is idempotent, so
        // finish it from the start. In the background: a slow runtime must
        // not hold up the agent; destroy() joins it.
        summary.tearingDown.push(record.spec.workloadId);
        this.beginDestroy(entry, { force: true }).catch((err) =>
          this.logger.error('could not finish an interrupted teardown; destroy it again', { workloadId: record.spec.workloadId, err }),
        );
        continue;
      }
      if (TERMINAL_STATES.has(record.state)) {
        summary.finished.push(record.spec.workloadId);
        continue;
      }
      if (await this.reattach(entry)) summary.readopted.push(record.spec.workloadId);
      else summary.lost.push(record.spec.workloadId);
    }
    if (summary.readopted.length + summary.lost.length + summary.tearingDown.length > 0) {
      this.logger.info('recovered workloads', { ...summary, finished: summary.finished.length });
    }
    await this.releaseLeakedPorts();
    return summary;
  }

  /**
   * Starts a workload. Idempotent: a workload id the agent already knows
   * returns its current record and starts nothing. A driver that fails to
   * start it leaves the workload `failed` with the reason (returned, not
   * thrown); invalid or unservable requests throw before anything is recorded.
   */
  async start(input: WorkloadSpecInput): Promise<WorkloadView> {
    return this.startWith(input);
  }

  /**
   * The reconciler's restart: an ended (stopped or failed) workload's
   * leftover runtime (container, task directory) is removed and it is
   * launched again from its recorded spec under the same id. Its seq keeps
   * increasing, so the control plane applies the new run's reports over the
   * old ones. Any other state is returned unchanged; unknown is NotFound.
   */
  async restart(workloadId: string): Promise<WorkloadView> {
    this.assertOpen();
    const entry = this.require(workloadId);
    await entry.starting?.catch(() => undefined);
    if (this.entries.get(workloadId) !== entry || !canRelaunch(entry)) return viewOf(entry.record);
    const { record } = entry;
    const driver = this.options.drivers.get(record.spec.driver);
    const run = (async () => {
      if (record.handle) await driver.destroy(record.handle, { force: true });
      Object.assign(record, { exited: false, exitCode: undefined, reason: undefined, handle: undefined, stopRequested: false, startedAt: undefined, finishedAt: undefined, ports: [] });
      this.logger.info('restarting an ended workload', { workloadId: record.spec.workloadId, seq: record.seq });
      await this.launch(entry, driver);
    })();
    entry.starting = run;
    try {
      await run;
    } finally {
      if (entry.starting === run) entry.starting = undefined;
    }
    return viewOf(record);
  }

  /**
   * Starts a new workload from a snapshot this agent took of `sourceWorkloadId`
   * (the machine comes from the snapshot; `input` names it and gives its
   * routes). Idempotent by workload id like start; an unknown snapshot is
   * NotFound, a driver without snapshots a FailedPrecondition, both thrown
   * before anything is recorded.
   */
  async restore(input: WorkloadSpecInput, from: { sourceWorkloadId: string; snapshotId: string; paused?: boolean }): Promise<WorkloadView> {
    this.assertOpen();
    checkSnapshotId(from.snapshotId);
    checkSourceWorkloadId(from.sourceWorkloadId, 'sourceWorkloadId');
    const known = this.entries.get(input.workloadId);
    if (known) return this.startWith(input);
    const driver = this.options.drivers.get(input.driver);
    if (!hasSnapshot(driver)) throw new FailedPreconditionError(`driver ${input.driver} cannot restore snapshots`);
    // Marked in use from before the check until the driver has read it: a
    // delete meanwhile is refused rather than pulling it away mid-restore.
    return this.snapshots.reading(from.sourceWorkloadId, from.snapshotId, async (file) => {
      if (!(await this.snapshots.exists(from.sourceWorkloadId, from.snapshotId))) {
        throw new NotFoundError(`snapshot ${from.snapshotId} of workload ${from.sourceWorkloadId} is not on this host`, { field: 'snapshotId' });
      }
      return this.startWith(input, (task) => driver.restoreFrom(file, task, { paused: from.paused ?? false }), from.paused ? 'paused' : 'running');
    });
  }

  /**
   * The snapshots of a workload on this host, read from disk (so also after
   * an agent restart, and for a workload that has finished), oldest first;
   * none for a workload that has none or is unknown here.
   */
  async listSnapshots(workloadId: string): Promise<SnapshotInfo[]> {
    this.assertOpen();
    return this.snapshots.list(checkSourceWorkloadId(workloadId));
  }

  /**
   * Deletes one snapshot. Idempotent: false when it was not there. A
   * snapshot still being taken, or read by a restore, is a FailedPrecondition.
   */
  async deleteSnapshot(workloadId: string, snapshotId: string): Promise<boolean> {
    this.assertOpen();
    const deleted = await this.snapshots.delete(checkSourceWorkloadId(workloadId), checkSnapshotId(snapshotId));
    if (deleted) this.logger.info('workload snapshot deleted', { workloadId, snapshotId });
    return deleted;
  }

  private async startWith(input: WorkloadSpecInput, begin?: (task: TaskSpec) => Promise<TaskHandle>, initial: 'running' | 'paused' = 'running'): Promise<WorkloadView> {
    this.assertOpen();
    const spec = validateSpec(input);
    const known = this.entries.get(spec.workloadId);
    if (known) {
      await known.starting?.catch(() => undefined);
      return viewOf(known.record);
    }
    const driver = this.options.drivers.get(spec.driver);
    const at = this.now().toISOString();
    const entry: Entry = {
      record: { version: 1, spec, state: 'pending', seq: 0, exited: false, stopRequested: false, updatedAt: at },
      writes: Promise.resolve(),
    };
    this.entries.set(spec.workloadId, entry);
    entry.starting = this.launch(entry, driver, begin, initial);
    try {
      await entry.starting;
    } finally {
      entry.starting = undefined;
    }
    return viewOf(entry.record);
  }

  /**
   * Stops a workload: `stopping`, the driver's signal-then-kill, then
   * `stopped` once it has exited. Idempotent: a finished workload is
   * returned as it is, and concurrent calls share one stop.
   */
  async stop(workloadId: string, request: StopRequest = {}): Promise<WorkloadView> {
    this.assertOpen();
    const entry = this.require(workloadId);
    await entry.starting?.catch(() => undefined);
    // A stop signal must not race a SIGSTOP of a pause still under way.
    await entry.pausing?.catch(() => undefined);
    if (!entry.stopping && !TERMINAL_STATES.has(entry.record.state) && !LEAVING.has(entry.record.state)) {
      entry.stopping = this.halt(entry, request.timeoutMs ?? this.defaultStopTimeoutMs, request.signal ?? 'SIGTERM').finally(() => {
        entry.stopping = undefined;
      });
    }
    await entry.stopping;
    return viewOf(entry.record);
  }

  /**
   * Tears a finished workload down and forgets it: `tearing_down` (the
   * intent, persisted first), the driver's destroy (container, VM or task
   * directory with its logs), its volume, host ports and snapshots, then
   * `retired` is persisted and published, and the record is deleted last.
   * So a crash anywhere leaves a record that a retry (or the next agent
   * start) finishes; every step is idempotent. A live workload is a
   * FailedPrecondition unless `force`, which stops it first. An unknown (or
   * already destroyed) id answers undefined; concurrent calls share one
   * teardown, and a failed one is tried again by the next call.
   */
  async destroy(workloadId: string, request: DestroyRequest = {}): Promise<WorkloadView | undefined> {
    this.assertOpen();
    for (;;) {
      const entry = this.entries.get(workloadId);
      if (!entry) return undefined;
      if (!entry.destroying) return this.beginDestroy(entry, request);
      const shared = await entry.destroying.catch(() => undefined);
      if (shared) return shared;
      // It failed: the next turn tries again (unless someone else already does).
    }
  }

  private beginDestroy(entry: Entry, request: DestroyRequest): Promise<WorkloadView> {
    const run = this.tearDown(entry, request).finally(() => {
      if (entry.destroying === run) entry.destroying = undefined;
    });
    entry.destroying = run;
    return run;
  }

  private async tearDown(entry: Entry, request: DestroyRequest): Promise<WorkloadView> {
    const { record } = entry;
    const workloadId = record.spec.workloadId;
    await entry.starting?.catch(() => undefined);
    await entry.pausing?.catch(() => undefined);
    if (!LEAVING.has(record.state)) {
      if (entry.stopping || !TERMINAL_STATES.has(record.state)) {
        if (!request.force) throw new FailedPreconditionError(`cannot destroy workload ${workloadId}: it is ${entry.stopping ? 'stopping' : record.state} (stop it first, or force)`);
        try {
          await this.stop(workloadId, { timeoutMs: request.timeoutMs });
        } catch (err) {
          // The driver's forced destroy below kills whatever is left.
          this.logger.warn('stop before teardown failed', { workloadId, err });
        }
      }
      await this.transition(entry, { state: 'tearing_down' });
    }
    if (record.state === 'tearing_down') {
      const driver = this.options.drivers.find(record.spec.driver);
      if (record.handle) {
        if (!driver) throw new FailedPreconditionError(`driver ${record.spec.driver} is not available on this host: cannot tear workload ${workloadId} down`);
        // Forced: past the recorded intent, anything of it still alive is a leftover.
        await driver.destroy(record.handle, { force: true });
      }
      await this.options.volumes?.remove(workloadId);
      await this.ports.release(workloadId);
      // Snapshots belong to the workload they were taken of and go with it.
      await rm(join(this.options.stateDir, 'snapshots', workloadId), { recursive: true, force: true });
      await this.transition(entry, { state: 'retired', finishedAt: record.finishedAt ?? this.now().toISOString() });
    }
    const view = viewOf(record);
    // Last: until the file is gone, a restarted agent finishes the job.
    await entry.writes.catch(() => undefined);
    await this.store.remove(workloadId);
    if (this.entries.get(workloadId) === entry) this.entries.delete(workloadId);
    this.logger.info('workload destroyed', { workloadId });
    return view;
  }

  /**
   * Freezes a running workload (running → paused) through its driver's pause
   * capability. Idempotent: a paused workload is returned as it is. A
   * workload in any other state, or whose driver cannot pause, is a
   * FailedPrecondition.
   */
  pause(workloadId: string): Promise<WorkloadView> {
    return this.pauseOrResume(workloadId, 'paused');
  }

  /** Thaws a paused workload (paused → running). Idempotent like pause. */
  resume(workloadId: string): Promise<WorkloadView> {
    return this.pauseOrResume(workloadId, 'running');
  }

  inspect(workloadId: string): WorkloadView {
    return viewOf(this.require(workloadId).record);
  }

  list(): WorkloadView[] {
    return [...this.entries.values()].map((e) => viewOf(e.record)).sort((a, b) => a.workloadId.localeCompare(b.workloadId));
  }

  /**
   * Runtime objects carrying a Corral workload id that this agent has no
   * record of (orphans: a record lost, or a runtime created by someone
   * else), from every driver that can find them by label.
   */
  async listUnmanaged(): Promise<Array<LabelledRuntime & { driver: string }>> {
    const found: Array<LabelledRuntime & { driver: string }> = [];
    for (const driver of this.options.drivers.all()) {
      if (!hasLabelledRuntimes(driver)) continue;
      try {
        for (const runtime of await driver.listLabelled()) {
          if (!this.entries.has(runtime.workloadId)) found.push({ ...runtime, driver: driver.name });
        }
      } catch (err) {
        this.logger.warn('could not list labelled runtime objects', { driver: driver.name, err });
      }
    }
    return found.sort((a, b) => a.workloadId.localeCompare(b.workloadId));
  }

  /**
   * Removes the runtime objects labelled with an id this agent has no
   * record of (the reconciler's reap). A known workload is left to
   * destroy(): its record, ports and volume go with it. Idempotent.
   */
  async destroyUnmanaged(workloadId: string): Promise<boolean> {
    this.assertOpen();
    if (this.entries.has(workloadId)) return false;
    let removed = false;
    for (const driver of this.options.drivers.all()) {
      if (!hasLabelledRuntimes(driver)) continue;
      if (!(await driver.listLabelled()).some((r) => r.workloadId === workloadId)) continue;
      await driver.removeLabelled(workloadId);
      removed = true;
    }
    if (removed) this.logger.warn('removed an unmanaged runtime object', { workloadId });
    return removed;
  }

  /** The last `tailBytes` of a workload's output (0 = the default 1 MiB). */
  async readLogs(workloadId: string, tailBytes = 0): Promise<LogChunk> {
    const { record } = this.require(workloadId);
    const driver = this.options.drivers.find(record.spec.driver);
    if (!driver) throw new FailedPreconditionError(`driver ${record.spec.driver} is not available on this host`);
    if (!hasLogs(driver)) throw new FailedPreconditionError(`driver ${record.spec.driver} does not keep logs`);
    if (!record.handle) return { data: Buffer.alloc(0), truncated: false };
    const tail = Math.min(tailBytes > 0 ? tailBytes : DEFAULT_LOG_TAIL_BYTES, MAX_LOG_TAIL_BYTES);
    return driver.readLogs(record.handle, { tailBytes: tail });
  }

  /**
   * The last `tailBytes` of a workload's output (0 = the default 1 MiB), then,
   * with `follow`, new output as it is written (the log is polled by offset
   * every `pollMs`) until the workload has ended and its last bytes are
   * sent, or `signal` aborts. Following needs a driver that can read its log
   * from an offset; for others it is a FailedPrecondition, never a fake.
   */
  async *streamLogs(
    workloadId: string,
    options: { tailBytes?: number; follow?: boolean; signal?: AbortSignal; pollMs?: number },
  ): AsyncGenerator<Buffer, void, undefined> {
    const { record } = this.require(workloadId);
    const driver = this.options.drivers.find(record.spec.driver);
    if (!driver) throw new FailedPreconditionError(`driver ${record.spec.driver} is not available on this host`);
    if (!hasLogs(driver)) throw new FailedPreconditionError(`driver ${record.spec.driver} does not keep logs`);
    const tail = Math.min(options.tailBytes && options.tailBytes > 0 ? options.tailBytes : DEFAULT_LOG_TAIL_BYTES, MAX_LOG_TAIL_BYTES);
    if (!options.follow) {
      const chunk = await this.readLogs(workloadId, tail);
      if (chunk.data.length > 0) yield chunk.data;
      return;
    }
    if (!canFollowLogs(driver)) throw new FailedPreconditionError(`driver ${record.spec.driver} cannot follow logs`);
    const pollMs = options.pollMs ?? LOG_FOLLOW_POLL_MS;
    const signal = options.signal;
    const ended = () => {
      const entry = this.entries.get(workloadId);
      return !entry || TERMINAL_STATES.has(entry.record.state);
    };
    // A workload still being placed has no handle (and no log) yet.
    while (!this.entries.get(workloadId)?.record.handle) {
      if (ended() || signal?.aborted) return;
      await sleep(pollMs, signal);
    }
    const handle = this.require(workloadId).record.handle as TaskHandle;
    let offset: number;
    if (driver.readLogTailForFollow) {
      // Offsets into a framed log (podman's CRI records) are not output bytes: the driver finds where the tail starts.
      const start = await driver.readLogTailForFollow(handle, { tailBytes: tail });
      if (start.data.length > 0) yield start.data;
      offset = start.nextOffset;
    } else {
      offset = Math.max(0, (await driver.readLogsFrom(handle, { offset: 0, maxBytes: 0 })).size - tail);
    }
    for (;;) {
      // Seen ended before the last read: everything it wrote is in the file by then.
      const done = ended();
      for (;;) {
        if (signal?.aborted) return;
        const range = await driver.readLogsFrom(handle, { offset, maxBytes: LOG_FOLLOW_CHUNK_BYTES });
        if (range.size < offset) {
          offset = 0; // truncated underneath us: start over from its beginning
          continue;
        }
        const next = range.nextOffset ?? offset + range.data.length;
        if (next === offset) break;
        offset = next;
        if (range.data.length > 0) yield range.data;
      }
      if (done || signal?.aborted) return;
      await sleep(pollMs, signal);
    }
  }

  /**
   * The driver and handle of a workload that runs now, for operations inside
   * it (exec, files). A workload in any other state, or one whose driver is
   * gone, is a FailedPrecondition naming the state.
   */
  live(workloadId: string, what: string): { driver: Driver; handle: TaskHandle } {
    this.assertOpen();
    const entry = this.require(workloadId);
    const { record } = entry;
    const driver = this.options.drivers.find(record.spec.driver);
    if (!driver) throw new FailedPreconditionError(`driver ${record.spec.driver} is not available on this host`);
    if (record.state !== 'running' || !record.handle || entry.stopping) {
      throw new FailedPreconditionError(`cannot ${what} workload ${workloadId}: it is ${entry.stopping ? 'stopping' : record.state}`);
    }
    return { driver, handle: record.handle };
  }

  /**
   * A memory snapshot of a running workload into `<stateDir>/snapshots/<id>/`,
   * reporting the driver's progress. With `leavePaused` the workload is
   * paused afterwards (and recorded so); otherwise it runs on as before.
   */
  async snapshot(
    workloadId: string,
    onProgress: (progress: SnapshotProgress) => void,
    options: { leavePaused?: boolean } = {},
  ): Promise<SnapshotResult & { snapshotId: string }> {
    const { driver, handle } = this.live(workloadId, 'snapshot');
    if (!hasSnapshot(driver)) throw new FailedPreconditionError(`driver ${driver.name} cannot take memory snapshots`);
    const entry = this.require(workloadId);
    const createdAt = this.now();
    const snapshotId = newSnapshotId(createdAt);
    // One at a time with pause/resume: both freeze and thaw the same task.
    const run = (entry.pausing ?? Promise.resolve())
      .catch(() => undefined)
      .then(async () => {
        const result = await this.snapshots.taking(workloadId, snapshotId, driver.name, createdAt, (file) =>
          driver.snapshot(handle, file, onProgress, { leavePaused: options.leavePaused }),
        );
        if (options.leavePaused && entry.record.state === 'running') await this.transition(entry, { state: 'paused' });
        return result;
      });
    entry.pausing = run;
    try {
      const result = await run;
      this.logger.info('workload snapshot taken', { workloadId, snapshotId, bytes: result.bytes, ms: result.durationMs });
      return { ...result, snapshotId };
    } finally {
      if (entry.pausing === run) entry.pausing = undefined;
    }
  }

  /**
   * Stops reacting to workload events and refuses new requests. Workloads
   * keep running: the next agent process re-adopts them.
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.entries.values()].map((e) => e.writes));
  }

  private async launch(entry: Entry, driver: Driver, begin?: (task: TaskSpec) => Promise<TaskHandle>, initial: 'running' | 'paused' = 'running'): Promise<void> {
    const { spec } = entry.record;
    await this.transition(entry, { state: 'provisioning' });
    let ports: PortMapping[] = [];
    const routes = spec.routes ?? [];
    if (routes.length > 0) {
      try {
        ports = await this.ports.allocate(
          spec.workloadId,
          routes.map((r) => ({ name: r.name, guestPort: r.port, protocol: r.protocol })),
        );
      } catch (err) {
        const why = isCorralError(err) ? err.message : 'port allocation error';
        this.logger.warn('no host ports for a workload', { workloadId: spec.workloadId, err });
        await this.transition(entry, { state: 'failed', reason: `start failed: ${why}`, finishedAt: this.now().toISOString() });
        return;
      }
    }
    // A restore's disks come with its snapshot; only a fresh start clones one
    // (a microVM's vm.rootDisk, a unikernel's image: the same path for both).
    let rootDisk: string | undefined;
    const rootDiskBase = rootDiskBaseOf(spec);
    if (rootDiskBase && !begin) {
      try {
        rootDisk = await this.cloneRootDisk(entry, rootDiskBase);
      } catch (err) {
        const why = isCorralError(err) ? err.message : 'volume error';
        this.logger.warn('no root disk for a workload', { workloadId: spec.workloadId, err });
        await this.transition(entry, { state: 'failed', reason: `start failed: ${why}`, finishedAt: this.now().toISOString() });
        return;
      }
    }
    // Corral's port variables win over the caller's: they say where the
    // workload must listen for its routes to reach it.
    const env = { ...spec.env, ...portEnv(ports, { listenOn: driver.hostNetwork ? 'hostPort' : 'guestPort' }) };
    let handle: TaskHandle;
    try {
      handle = await (begin ?? ((task: TaskSpec) => driver.start(task)))({
        workloadId: spec.workloadId,
        name: spec.name,
        command: spec.command,
        env,
        labels: spec.labels,
        ...(spec.image !== undefined ? { image: spec.image } : {}),
        ...(spec.resources !== undefined ? { resources: { ...spec.resources } } : {}),
        ...(spec.vm !== undefined ? { vm: { ...spec.vm, ...(rootDisk !== undefined ? { disk: rootDisk } : {}) } } : {}),
        ports: ports.map((p) => ({ ...p })),
      });
    } catch (err) {
      // Typed errors were written for callers; anything else may carry
      // internals and is only logged.
      const why = isCorralError(err) ? err.message : 'driver error';
      this.logger.warn('workload failed to start', { workloadId: spec.workloadId, driver: spec.driver, err });
      await this.transition(entry, { state: 'failed', reason: `start failed: ${why}`, finishedAt: this.now().toISOString() });
      return;
    }
    await this.transition(entry, { state: initial, handle, ports, startedAt: this.now().toISOString() });
    this.logger.info('workload started', { workloadId: spec.workloadId, driver: spec.driver, handle: handle.displayId });
    this.watch(entry, driver, handle);
  }

  /**
   * The workload's own copy-on-write clone of `baseImage` (idempotent per
   * workload), recorded in its record before the driver sees it: teardown
   * removes it whatever happens after.
   */
  private async cloneRootDisk(entry: Entry, baseImage: string): Promise<string> {
    const volumes = this.options.volumes;
    if (!volumes?.cloneImage) throw new FailedPreconditionError('this agent has no volume manager: it cannot clone root disks');
    const clone = await volumes.cloneImage(baseImage, entry.record.spec.workloadId);
    entry.record.volume = { path: clone.path, format: clone.format, baseImage };
    const saved = structuredClone(entry.record);
    const step = entry.writes.catch(() => undefined).then(() => this.store.save(saved));
    entry.writes = step;
    await step;
    this.logger.info('root disk cloned', { workloadId: entry.record.spec.workloadId, baseImage, disk: clone.path, format: clone.format });
    return clone.path;
  }

  private async halt(entry: Entry, timeoutMs: number, signal: NodeJS.Signals): Promise<void> {
    const { record } = entry;
    const handle = record.handle;
    const driver = this.options.drivers.find(record.spec.driver);
    if (!handle || !driver) {
      // Nothing was started (or its driver is gone): there is nothing to signal.
      await this.transition(entry, { state: 'stopped', stopRequested: true, exited: true, reason: 'stopped on request', finishedAt: this.now().toISOString() });
      return;
    }
    if (record.state !== 'stopping') await this.transition(entry, { state: 'stopping', stopRequested: true });
    const exitRecorded = entry.exitRecorded ?? Promise.resolve();
    const done = (async () => {
      await driver.stop(handle, { timeoutMs, signal });
      await exitRecorded;
    })();
    let timer: NodeJS.Timeout | undefined;
    const overrun = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new UnavailableError(`workload ${record.spec.workloadId} did not stop within ${timeoutMs + this.stopOverrunMs} ms`)),
        timeoutMs + this.stopOverrunMs,
      );
    });
    try {
      await Promise.race([done, overrun]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async pauseOrResume(workloadId: string, to: 'paused' | 'running'): Promise<WorkloadView> {
    this.assertOpen();
    const entry = this.require(workloadId);
    await entry.starting?.catch(() => undefined);
    const run = (entry.pausing ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => this.applyPauseOrResume(entry, to));
    entry.pausing = run;
    try {
      return await run;
    } finally {
      if (entry.pausing === run) entry.pausing = undefined;
    }
  }

  private async applyPauseOrResume(entry: Entry, to: 'paused' | 'running'): Promise<WorkloadView> {
    const { record } = entry;
    const { workloadId, driver: driverName } = record.spec;
    const driver = this.options.drivers.find(driverName);
    if (!driver) throw new FailedPreconditionError(`driver ${driverName} is not available on this host`);
    if (!hasPause(driver)) throw new FailedPreconditionError(`driver ${driverName} cannot pause`);
    const action = pauseResumeAction(record.state, to);
    if (action === 'already') return viewOf(record);
    if (action === 'refuse' || !record.handle || entry.stopping) {
      const verb = to === 'paused' ? 'pause' : 'resume';
      throw new FailedPreconditionError(`cannot ${verb} workload ${workloadId}: it is ${entry.stopping ? 'stopping' : record.state}`);
    }
    if (to === 'paused') await driver.pause(record.handle);
    else await driver.resume(record.handle);
    // The task may have exited meanwhile: then its exit stands.
    if (pauseResumeAction(record.state, to) === 'act') {
      await this.transition(entry, { state: to });
      this.logger.info(to === 'paused' ? 'workload paused' : 'workload resumed', { workloadId });
    }
    return viewOf(record);
  }

  /** Records the task's exit once it happens. */
  private watch(entry: Entry, driver: Driver, handle: TaskHandle): void {
    entry.exitRecorded = driver.wait(handle).then(
      (exit) => this.recordExit(entry, exit),
      (err) => this.logger.error('lost track of a workload', { workloadId: handle.workloadId, err }),
    );
  }

  private async recordExit(entry: Entry, exit: ExitResult): Promise<void> {
    if (this.closed || TERMINAL_STATES.has(entry.record.state) || LEAVING.has(entry.record.state)) return;
    const exitCode = exit.exitCode ?? signalExitCode(exit.signal);
    const how = exit.exitCode !== undefined ? `exited with code ${exit.exitCode}` : exit.signal ? `killed by ${exit.signal}` : (exit.detail ?? 'exited');
    const clean = entry.record.stopRequested || exit.exitCode === 0;
    const change: RecordChange = {
      state: clean ? 'stopped' : 'failed',
      exited: true,
      exitCode,
      reason: entry.record.stopRequested ? `stopped on request (${how})` : how,
      finishedAt: this.now().toISOString(),
    };
    try {
      await this.transition(entry, change);
    } catch (err) {
      this.logger.error('could not record a workload exit', { workloadId: entry.record.spec.workloadId, err });
    }
  }

  private async reattach(entry: Entry): Promise<boolean> {
    const { record } = entry;
    const driver = this.options.drivers.find(record.spec.driver);
    let readopted = false;
    if (driver && record.handle) {
      try {
        const outcome = await driver.recover(record.handle);
        readopted = outcome.recovered;
        if (!outcome.recovered) this.logger.warn('workload vanished while the agent was down', { workloadId: record.spec.workloadId, why: outcome.reason });
      } catch (err) {
        this.logger.error('could not recover a workload', { workloadId: record.spec.workloadId, err });
      }
    } else {
      this.logger.warn('workload cannot be recovered', {
        workloadId: record.spec.workloadId,
        why: driver ? 'the agent stopped before it had started' : `driver ${record.spec.driver} is not available`,
      });
    }
    if (!readopted || !driver || !record.handle) {
      await this.transition(entry, { state: 'failed', exited: true, exitCode: undefined, reason: LOST_REASON, finishedAt: this.now().toISOString() });
      return false;
    }
    this.watch(entry, driver, record.handle);
    if (record.state === 'stopping') {
      // The agent went down mid-stop: finish the job.
      entry.stopping = this.halt(entry, this.defaultStopTimeoutMs, 'SIGTERM')
        .catch((err) => this.logger.error('could not finish an interrupted stop', { workloadId: record.spec.workloadId, err }))
        .finally(() => (entry.stopping = undefined));
    }
    return true;
  }

  /**
   * Applies a state change in memory at once (so seq order is the call
   * order), then persists it and publishes it, in that order: a published
   * seq is always on disk, so after a restart seq continues above it.
   */
  private transition(entry: Entry, change: RecordChange): Promise<void> {
    const { record } = entry;
    if (!canTransition(record.state, change.state)) {
      this.logger.warn('unexpected workload state change', { workloadId: record.spec.workloadId, from: record.state, to: change.state });
    }
    // Stopped or failed for good: its host ports go back to the pool.
    const final = TERMINAL_STATES.has(change.state);
    Object.assign(record, change, final ? { ports: [] } : {}, { seq: record.seq + 1, updatedAt: this.now().toISOString() });
    const snapshot: WorkloadRecord = structuredClone(record);
    const step = entry.writes.catch(() => undefined).then(async () => {
      await this.store.save(snapshot);
      // Released before the change is published, so whoever hears "stopped"
      // can already be given the port.
      if (final) await this.releasePorts(snapshot.spec.workloadId);
      this.publish(snapshot);
    });
    entry.writes = step;
    return step;
  }

  /** Idempotent; a failure is logged and retried at the next agent start. */
  private async releasePorts(workloadId: string): Promise<void> {
    try {
      const released = await this.ports.release(workloadId);
      if (released.length > 0) this.logger.info('released host ports', { workloadId, ports: released.map((p) => p.hostPort) });
    } catch (err) {
      this.logger.error('could not release host ports', { workloadId, err });
    }
  }

  /**
   * Ports still held by workloads that are finished or unknown: left over by
   * an agent that stopped between recording an end and releasing its ports.
   */
  private async releaseLeakedPorts(): Promise<void> {
    let table: Record<string, PortMapping[]>;
    try {
      table = await this.ports.list();
    } catch (err) {
      this.logger.error('could not read the port table', { err });
      return;
    }
    for (const workloadId of Object.keys(table)) {
      const entry = this.entries.get(workloadId);
      if (!entry || TERMINAL_STATES.has(entry.record.state)) await this.releasePorts(workloadId);
    }
  }

  private publish(record: WorkloadRecord): void {
    const view = viewOf(record);
    try {
      this.options.bus.publish(Topics.workloadState, view.workloadId, {
        workloadId: view.workloadId,
        hostId: this.options.hostId,
        seq: view.seq,
        state: instanceStateToProto(view.state),
        exited: view.exited,
        exitCode: wireExitCode(view),
        reason: view.reason ?? '',
        at: new Date(record.updatedAt),
        hostToken: this.options.hostToken?.() ?? '',
        // The ports of this very seq, so the control plane never has to
        // pair a state with a port answer that may arrive after a newer one.
        ports: view.ports.map((p) => ({ ...p })),
        portsReported: true,
      });
    } catch (err) {
      // The change is on disk and in the next heartbeat; a consumer that
      // missed the event catches up from those.
      this.logger.warn('could not publish a workload state change', { workloadId: view.workloadId, seq: view.seq, err });
    }
  }

  private require(workloadId: string): Entry {
    const entry = this.entries.get(workloadId);
    if (!entry) throw new NotFoundError(`workload ${workloadId} is not on this host`, { field: 'workloadId' });
    return entry;
  }

  private assertOpen(): void {
    if (!this.initialised) throw new UnavailableError('the agent is still starting');
    if (this.closed) throw new UnavailableError('the agent is shutting down');
  }
}

/** Ended on its own or on request, and not being started, stopped or torn down. */
function canRelaunch(entry: Entry): boolean {
  const { state } = entry.record;
  return (state === 'stopped' || state === 'failed') && !entry.starting && !entry.stopping && !entry.destroying;
}

/** A signal death as a shell reports it: 128 + signal number. */
function signalExitCode(signal: NodeJS.Signals | undefined): number | undefined {
  if (!signal) return undefined;
  const number = osConstants.signals[signal];
  return number === undefined ? undefined : 128 + number;
}
