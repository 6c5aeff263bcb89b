// The contract every workload driver implements, shaped like Nomad's task
// drivers (DESIGN §3). A driver owns how a workload runs; the supervisor owns
// what state it is in. A driver keeps no state that matters across an agent
// restart except what it puts in the handle, which the supervisor persists
// and hands back to `recover`.

/** What a driver is asked to run. */
export interface TaskSpec {
  workloadId: string;
  name: string;
  command: string[];
  /** The workload's complete environment: nothing else is added by Corral. */
  env: Record<string, string>;
  labels: Record<string, string>;
  /** podman: an image reference; qemu unikernel: a bootable image path. */
  image?: string;
  /** qemu microVM boot media. */
  vm?: VmBootSpec;
  resources?: TaskResources;
  /** Host ports already allocated for the task's routes. */
  ports?: PortMapping[];
}

export interface VmBootSpec {
  mode: 'microvm' | 'unikernel';
  kernel?: string;
  initrd?: string;
  /** Root disk: a per-task copy-on-write clone made by the volume manager. */
  disk?: string;
  kernelArgs?: string;
}

export interface TaskResources {
  vcpus?: number;
  memoryMb?: number;
}

export interface PortMapping {
  /** Route name; `$PORT_<NAME>` in the task's environment. */
  name: string;
  /** Port the workload listens on inside its sandbox. */
  guestPort: number;
  /** Port on the host's loopback or public address that forwards to it. */
  hostPort: number;
  protocol: 'tcp' | 'udp';
}

/**
 * A driver's reference to one running task: JSON only, because it is
 * persisted and given back to the driver after an agent restart.
 */
export interface TaskHandle {
  driver: string;
  workloadId: string;
  /** Short human-readable id shown to the control plane (a pid, a container id). */
  displayId: string;
  /** Driver-owned details needed to find the task again. */
  state: Record<string, unknown>;
}

export interface ExitResult {
  /**
   * undefined when the exit code cannot be known (e.g. a process re-adopted
   * after an agent restart: only its parent could have collected it).
   */
  exitCode: number | undefined;
  /** Set when the task was ended by a signal. */
  signal?: NodeJS.Signals;
  /** Why the code is unknown, or other details worth reporting. */
  detail?: string;
}

export type TaskStatus = { running: true } | { running: false; exit: ExitResult | undefined };

export type RecoverOutcome = { recovered: true } | { recovered: false; reason: string };

export interface StopOptions {
  /** Grace period between `signal` and a forced kill. */
  timeoutMs: number;
  signal: NodeJS.Signals;
}

export interface DestroyOptions {
  /** Kill the task first if it still runs; otherwise refuse to destroy a live task. */
  force: boolean;
}

/** A driver's health as reported in heartbeats and at registration. */
export interface DriverFingerprint {
  name: string;
  healthy: boolean;
  version: string;
  detail: string;
}

export interface Driver {
  readonly name: string;
  /**
   * True when tasks share the host's network namespace (nothing forwards a
   * host port to them), so a task must listen on its host ports itself and
   * `$PORT`/`$PORT_<NAME>` carry the host ports. Absent: sandboxed, the
   * variables carry the guest ports.
   */
  readonly hostNetwork?: boolean;
  fingerprint(): Promise<DriverFingerprint>;
  /** Starts the task and returns once it runs. */
  start(spec: TaskSpec): Promise<TaskHandle>;
  /** Resolves when the task exits (started or recovered by this driver instance). */
  wait(handle: TaskHandle): Promise<ExitResult>;
  /** Asks the task to end with `signal`, then kills it after the timeout. Resolves once it has exited. */
  stop(handle: TaskHandle, options: StopOptions): Promise<void>;
  /** Releases everything the task held (files, runtime objects). */
  destroy(handle: TaskHandle, options: DestroyOptions): Promise<void>;
  inspect(handle: TaskHandle): Promise<TaskStatus>;
  /** Re-attaches to a task after an agent restart, so `wait`/`stop` work again. */
  recover(handle: TaskHandle): Promise<RecoverOutcome>;
}

// Optional capabilities: small separate interfaces a driver may also
// implement, detected with type guards, so the core contract stays minimal
// and a driver is never forced to fake a feature.

export interface LogChunk {
  data: Buffer;
  /** True when older output was left out. */
  truncated: boolean;
}

export interface LogsCapability {
  readLogs(handle: TaskHandle, options: { tailBytes: number }): Promise<LogChunk>;
}

export function hasLogs(driver: Driver): driver is Driver & LogsCapability {
  return typeof (driver as Partial<LogsCapability>).readLogs === 'function';
}

/** Freezes a task in place and thaws it again (SIGSTOP/SIGCONT, cgroup freezer, QMP stop/cont...). */
export interface PauseCapability {
  /** Resolves once the task is frozen. */
  pause(handle: TaskHandle): Promise<void>;
  /** Resolves once the task runs again. */
  resume(handle: TaskHandle): Promise<void>;
}

export function hasPause(driver: Driver): driver is Driver & PauseCapability {
  const candidate = driver as Partial<PauseCapability>;
  return typeof candidate.pause === 'function' && typeof candidate.resume === 'function';
}

export interface ExecOptions {
  /** Written to the command's stdin, which is then closed. */
  stdin?: string | Buffer;
  /** How long the command may run. */
  timeoutMs: number;
}

/** How a command run inside a task ended. */
export interface ExecOutcome {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs a command inside a running task's sandbox (like `podman exec`). */
export interface ExecCapability {
  /** Resolves with any exit code the command ends with; rejects only when it could not be run or timed out. */
  exec(handle: TaskHandle, argv: readonly string[], options: ExecOptions): Promise<ExecOutcome>;
}

export function hasExec(driver: Driver): driver is Driver & ExecCapability {
  return typeof (driver as Partial<ExecCapability>).exec === 'function';
}

export interface SnapshotProgress {
  /** The migration's status as qemu names it: setup, active, completed... */
  status: string;
  transferredBytes: number;
  /** Guest RAM size: what would be sent if no page were skipped as zero. */
  totalBytes: number;
  remainingBytes: number;
  elapsedMs: number;
}

export interface SnapshotOptions {
  /** Leave the task paused after the snapshot (default: back to how it was). */
  leavePaused?: boolean;
  /** Give up (and cancel the migration) after this long. Default 10 min. */
  timeoutMs?: number;
}

export interface SnapshotResult {
  file: string;
  bytes: number;
  durationMs: number;
}

export interface RestoreOptions {
  /** Leave the restored task paused (default: running). */
  paused?: boolean;
}

/**
 * Memory snapshots: the whole state of a running task (memory and devices)
 * to a file, and a new task started from it. Disks are not copied unless
 * the driver made them; a disk clone owned by the volume manager must be
 * kept as it was at snapshot time for a restore to be consistent.
 */
export interface SnapshotCapability {
  snapshot(handle: TaskHandle, file: string, onProgress?: (progress: SnapshotProgress) => void, options?: SnapshotOptions): Promise<SnapshotResult>;
  /**
   * Starts a new task from a snapshot. `spec` names the new task
   * (workloadId, name, labels) and gives its ports; the machine itself
   * (memory, vcpus, boot media) comes from the snapshot.
   */
  restoreFrom(file: string, spec: TaskSpec, options?: RestoreOptions): Promise<TaskHandle>;
}

export function hasSnapshot(driver: Driver): driver is Driver & SnapshotCapability {
  const d = driver as Partial<SnapshotCapability>;
  return typeof d.snapshot === 'function' && typeof d.restoreFrom === 'function';
}

/** One interactive command inside a task: streams both ways (`podman exec -i`, a guest agent session). */
export interface ExecSession {
  /** Bytes for the command's stdin; a promise when its input is full, settled once it has room again (or is gone). */
  writeStdin(data: Buffer): void | Promise<void>;
  /** Closes the command's stdin (EOF). */
  closeStdin(): void;
  /** Terminal size, when the session has a TTY; ignored otherwise. */
  resize?(columns: number, rows: number): void;
  onStdout(listener: (data: Buffer) => void): void;
  /** With a TTY, stderr is merged into stdout and this never fires. */
  onStderr(listener: (data: Buffer) => void): void;
  /** Resolves with the command's exit code once it has ended and its output has been delivered. */
  readonly exited: Promise<number>;
  /** Ends the command (client went away, deadline passed). */
  kill(): void;
  /**
   * Stop delivering output while the reader is behind, so the command blocks
   * on its own writes instead of the agent buffering; `resumeOutput` goes on.
   * Absent where the output is already all in memory (buffered exec).
   */
  pauseOutput?(): void;
  resumeOutput?(): void;
}

export interface ExecSessionOptions {
  /** Allocate a pseudo-terminal inside the sandbox. */
  tty: boolean;
  /** Extra environment for this command only. */
  env?: Record<string, string>;
  /** Working directory inside the sandbox. */
  workingDir?: string;
}

/**
 * Streaming exec. Drivers whose runtime only runs a command to completion
 * (a guest agent without streams) implement `ExecCapability` alone; the
 * agent then buffers stdin until EOF and refuses TTYs for them.
 */
export interface InteractiveExecCapability {
  execSession(handle: TaskHandle, argv: readonly string[], options: ExecSessionOptions): Promise<ExecSession>;
}

export function hasInteractiveExec(driver: Driver): driver is Driver & InteractiveExecCapability {
  return typeof (driver as Partial<InteractiveExecCapability>).execSession === 'function';
}

export type FileKind = 'file' | 'directory' | 'symlink' | 'other';

export interface FileEntry {
  /** Name inside the listed directory. */
  name: string;
  kind: FileKind;
  sizeBytes: number;
  /** Permission bits (e.g. 0o644). */
  mode: number;
  modifiedAt: Date;
}

export interface WriteFileOptions {
  /** Permission bits for a new file; default 0o644. */
  mode?: number;
  /** Refuse to write more than this many bytes (ResourceExhausted), leaving no partial file. */
  maxBytes: number;
}

/**
 * Files inside a task's own filesystem. Every path is absolute inside the
 * sandbox and must not escape it (no `..`, no symlink leading outside):
 * drivers throw InvalidArgumentError (field `path`) for such paths and
 * NotFoundError for absent ones. Writes are atomic: a failed or oversized
 * write leaves the previous content.
 */
export interface FilesCapability {
  readFile(handle: TaskHandle, path: string): Promise<AsyncIterable<Buffer>>;
  writeFile(handle: TaskHandle, path: string, content: AsyncIterable<Buffer>, options: WriteFileOptions): Promise<{ bytes: number }>;
  listDirectory(handle: TaskHandle, path: string): Promise<FileEntry[]>;
}

export function hasFiles(driver: Driver): driver is Driver & FilesCapability {
  const d = driver as Partial<FilesCapability>;
  return typeof d.readFile === 'function' && typeof d.writeFile === 'function' && typeof d.listDirectory === 'function';
}

/** A runtime object a driver found carrying a Corral workload id (container, task directory). */
export interface LabelledRuntime {
  workloadId: string;
  running: boolean;
  /** When the runtime object was created; the reconciler's grace window counts from here. */
  createdAt: Date;
  /** For people: a container id, a pid. */
  displayId: string;
}

/**
 * Finding and removing runtime objects by their Corral label alone, without
 * a handle: how the reconciler learns about (and reaps) orphans — objects
 * whose agent record is gone or was never written.
 */
export interface LabelledRuntimesCapability {
  /** Every runtime object of this driver carrying a Corral workload id, known to the agent or not. */
  listLabelled(): Promise<LabelledRuntime[]>;
  /** Kills and removes every runtime object labelled with `workloadId`. Idempotent. */
  removeLabelled(workloadId: string): Promise<void>;
}

export function hasLabelledRuntimes(driver: Driver): driver is Driver & LabelledRuntimesCapability {
  const d = driver as Partial<LabelledRuntimesCapability>;
  return typeof d.listLabelled === 'function' && typeof d.removeLabelled === 'function';
}
