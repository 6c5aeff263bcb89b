import { constants } from 'node:fs';
import { chmod, copyFile, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AlreadyExistsError, DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError } from '@corral/domain';
import {
  createExecutor,
  execErrorFromResult,
  isProcessAlive,
  killProcessGroup,
  processStartTime,
  spawnSupervised,
  type Command,
  type ExitStatus,
  type Executor,
  type SupervisedProcess,
} from '@corral/exec';
import { silentLogger, type Logger } from '@corral/logging';
import { ensurePrivateDir, writeJsonAtomic } from '../../state/atomic-file';
import { readFileRange, readFileTail, type LogRange } from '../../workloads/log-follow';
import { QEMU_IMG, qemuImgCreateOverlay, qemuImgInfo } from '../../volumes';
import type {
  DestroyOptions,
  Driver,
  DriverFingerprint,
  ExitResult,
  LabelledRuntime,
  LabelledRuntimesCapability,
  LogChunk,
  LogsCapability,
  PortMapping,
  RecoverOutcome,
  StopOptions,
  TaskHandle,
  TaskSpec,
  TaskStatus,
} from '../driver';
import { checkKvmDevice, chooseAccelerator, runKvmProbe, type AcceleratorChoice, type AcceleratorSetting, type KvmProbeConfig, type KvmState } from './accelerator';
import type { PauseCapability, RestoreOptions, SnapshotCapability, SnapshotOptions, SnapshotProgress, SnapshotResult } from '../driver';
import { checkMigrationFile } from './migration-file';
import { QEMU_MACHINE_TYPE, buildQemuArgs, checkPorts, checkSnapshotPath, machineFromSpec, migrationWriteUri, type VmDisk, type VmMachine, type VmRunFiles } from './qemu-args';
import { QmpClient, QmpCommandError, QmpConnectionError, withQmp, type QmpRetryOptions } from './qmp-client';
import type { ExecCapability, ExecOptions, ExecOutcome, FileEntry, FilesCapability, WriteFileOptions } from '../driver';
import { checkArgv, checkGuestPath, guestExec, guestListDirectory, guestReadFile, guestWriteFile, type Sessions } from './guest-ops';
import { QgaClient, QgaConnectionError } from './qga-client';

// VMs under qemu (DESIGN §3): direct kernel boot of a microVM (or a unikernel
// image booted from its disk), one qemu process per task in its own process
// group, user-mode networking with host port forwards, the serial console
// in a log file, and a QMP socket for control: powerdown, pause/resume
// (stop/cont) and memory snapshots (migrate to a file, start another qemu
// with -incoming from it). Exec and files inside the VM go through the QEMU
// guest agent (qemu-ga in the guest) on a virtio-serial port whose host end
// is qga.sock: buffered exec (guest-exec, polled), file reads and atomic
// writes (guest-file-*), and listings (find/stat run in the guest); see
// guest-ops.ts. No interactive exec: the agent has no streams, so the agent
// layer buffers stdin for this driver. A guest without qemu-ga (a unikernel,
// an image without it) never answers, and those calls fail with
// FailedPreconditionError after `guestAgentTimeoutMs` instead of hanging.
//
// Per task: <stateDir>/<workloadId>/ holds qmp.sock, qga.sock, console.log
// (the guest's serial console), qemu.log (qemu's own stdout/stderr),
// qemu.pid, and disk0.qcow2 when the driver made an overlay for a unikernel
// image itself (only when it was given no clone: in the agent, unikernels and
// microVMs alike boot the clone the volume manager made, see
// volumes/root-disk-base.ts).

export const QEMU_DRIVER_NAME = 'qemu';
export const QEMU_SYSTEM_BINARY = 'qemu-system-x86_64';

export const UNKNOWN_EXIT_DETAIL =
  'exit code unknown: qemu was re-adopted after an agent restart and only its parent can collect its exit status';

export interface QemuDriverConfig {
  /** `auto` picks tcg unless a kvm probe is configured and passes (see accelerator.ts). */
  accelerator: AcceleratorSetting;
  /** One directory per task under it. Must be absolute and short: unix socket paths are limited to 107 bytes. */
  stateDir: string;
  /** Default `qemu-system-x86_64` on PATH. */
  qemuBinary?: string;
  /** Default `qemu-img` on PATH. */
  qemuImgBinary?: string;
  defaultMemoryMb: number;
  defaultVcpus: number;
  logger?: Logger;
  /** A guest to boot under kvm before trusting it (for `auto` and `kvm`). */
  kvmProbe?: KvmProbeConfig;
  /** Default /dev/kvm. */
  kvmDevice?: string;
  /** Where host port forwards listen. Default 127.0.0.1. */
  hostAddress?: string;
  /**
   * Let guests connect out through qemu's user-mode NAT. Default false
   * (`restrict=on`): with egress a guest also reaches every service on the
   * host's loopback, as 10.0.2.2.
   */
  guestEgress?: boolean;
  /** Runs qemu-img and `qemu --version`; one is made for those two when absent. */
  executor?: Executor;
  /** How long start waits for qemu's QMP socket. Default 30 s. */
  startTimeoutMs?: number;
  /** How long a restore may take to load its snapshot. Default 120 s. */
  restoreTimeoutMs?: number;
  /** After QMP quit, how long to wait before SIGKILL. Default 3 s. */
  quitWaitMs?: number;
  /** After SIGKILL, how long to wait for the exit. Default 5 s. */
  killWaitMs?: number;
  /** How often a re-adopted qemu is checked for exit. Default 500 ms. */
  adoptedPollMs?: number;
  /** Give VMs the guest agent's virtio-serial port (exec and files). Default true. */
  guestAgent?: boolean;
  /** How the agent clones root disks (spec.vm.rootDisk), for the fingerprint; absent: it does not. */
  rootDisks?: { kind: string; reason: string; usable: boolean };
  /** How long a guest agent is waited for to answer a session's resync before it counts as unavailable. Default 5 s. */
  guestAgentTimeoutMs?: number;
  /** How long one guest agent command (a chunk of a file, an exec status) may take. Default 30 s. */
  guestAgentCommandTimeoutMs?: number;
  /** Bytes per guest agent file read/write. Default 512 KiB. */
  guestAgentChunkBytes?: number;
}

/** What the handle carries: JSON only (persisted by the supervisor). */
interface QemuState {
  pid: number;
  startTime?: string;
  dir: string;
  qmpSocket: string;
  consoleLog: string;
  qemuLog: string;
  pidFile: string;
  /** Absent in handles of VMs started before the guest agent port existed. */
  qgaSocket?: string;
  machine: VmMachine;
  ports: PortMapping[];
}

interface Tracked {
  pid: number;
  startTime?: string;
  exited: Promise<ExitResult>;
  result?: ExitResult;
  /** Present when this driver instance started it. */
  child?: SupervisedProcess;
}

/** Written next to a snapshot file as `<file>.json`. */
interface SnapshotMeta {
  format: typeof SNAPSHOT_FORMAT;
  createdAt: string;
  sourceWorkloadId: string;
  bytes: number;
  machine: VmMachine;
  /** For each disk the driver owned: the copy taken with the snapshot. */
  diskCopies: Record<number, string>;
}

const SNAPSHOT_FORMAT = 'corral-qemu-snapshot/1';
const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
/** sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
/** qemu caps migration at 128 MiB/s by default; a local file can take far more. */
const SNAPSHOT_MAX_BANDWIDTH = 64 * 1024 * 1024 * 1024;
/** Runs states from which a VM can be snapshotted or resumed. */
const LIVE_STATES = new Set(['running', 'paused', 'postmigrate', 'suspended']);

export class QemuDriver implements Driver, LogsCapability, PauseCapability, SnapshotCapability, ExecCapability, FilesCapability, LabelledRuntimesCapability {
  readonly name = QEMU_DRIVER_NAME;
  private readonly tracked = new Map<string, Tracked>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /** The guest agent's channel is separate from QMP: its sessions queue on their own. */
  private readonly agentLocks = new Map<string, Promise<unknown>>();
  private readonly logger: Logger;
  private readonly executor: Executor;
  private readonly qemuBinary: string;
  private readonly qemuImgBinary: string;
  private readonly hostAddress: string;
  private acceleratorChoice?: Promise<AcceleratorChoice>;

  constructor(private readonly config: QemuDriverConfig) {
    if (!config.stateDir.startsWith('/') || config.stateDir.includes(',')) {
      throw new InvalidArgumentError('qemu stateDir must be an absolute path without commas', { field: 'stateDir' });
    }
    this.logger = config.logger ?? silentLogger;
    this.qemuBinary = config.qemuBinary ?? QEMU_SYSTEM_BINARY;
    this.qemuImgBinary = config.qemuImgBinary ?? QEMU_IMG;
    this.hostAddress = config.hostAddress ?? '127.0.0.1';
    this.executor = config.executor ?? createExecutor({ allowedPrograms: [this.qemuBinary, this.qemuImgBinary], logger: this.logger });
  }

  async fingerprint(): Promise<DriverFingerprint> {
    const path = this.executor.resolve(this.qemuBinary);
    if (!path) return { name: this.name, healthy: false, version: '', detail: `${this.qemuBinary} is not installed` };
    let version: string;
    try {
      version = await this.executor.run(qemuVersionCommand(path));
    } catch (err) {
      return { name: this.name, healthy: false, version: '', detail: `${this.qemuBinary} --version failed: ${(err as Error).message}` };
    }
    const choice = await this.accelerator();
    const rootDisks = this.config.rootDisks;
    const volumes = rootDisks
      ? `; root disks: ${rootDisks.kind}${rootDisks.usable ? '' : ' (unusable)'} (${rootDisks.reason})`
      : '; root disks: none (no volume manager)';
    const detail = `accelerators usable: ${choice.usable.join(', ')}; ${choice.accelerator ? `VMs run under ${choice.accelerator}` : 'VMs cannot run'} (${choice.reason}); machine ${QEMU_MACHINE_TYPE}${volumes}`;
    return { name: this.name, healthy: choice.accelerator !== undefined, version, detail };
  }

  /** Which accelerator VMs run under here, decided once per driver instance. */
  accelerator(): Promise<AcceleratorChoice> {
    this.acceleratorChoice ??= this.decideAccelerator();
    return this.acceleratorChoice;
  }

  async start(spec: TaskSpec): Promise<TaskHandle> {
    checkWorkloadId(spec.workloadId);
    const choice = await this.accelerator();
    if (!choice.accelerator) throw new FailedPreconditionError(`qemu cannot run VMs on this host: ${choice.reason}`);
    const { machine, diskPaths } = machineFromSpec(spec, {
      accelerator: choice.accelerator,
      memoryMb: this.config.defaultMemoryMb,
      vcpus: this.config.defaultVcpus,
      guestAgent: this.config.guestAgent ?? true,
    });
    return this.serialize(spec.workloadId, async () => {
      const files = await this.prepareTaskDir(spec.workloadId);
      try {
        const disks = await this.prepareDisks(files.dir, machine.boot.mode, diskPaths, spec.vm?.disk !== undefined);
        return await this.launch(spec, { ...machine, disks }, files);
      } catch (err) {
        await rm(files.dir, { recursive: true, force: true });
        throw err;
      }
    });
  }

  async wait(handle: TaskHandle): Promise<ExitResult> {
    return this.attached(handle).exited;
  }

  /**
   * SIGKILL kills qemu at once. Any other signal asks the guest to power
   * off (ACPI powerdown), waits up to the timeout, then has qemu quit
   * (immediate, but disks are flushed), then SIGKILLs it. A paused guest
   * cannot act on a powerdown, so it is quit straight away.
   */
  async stop(handle: TaskHandle, options: StopOptions): Promise<void> {
    const tracked = this.attached(handle);
    if (tracked.result) return;
    const state = stateOf(handle);
    if (options.signal !== 'SIGKILL') {
      const asked = await this.serialize(handle.workloadId, () => this.requestPowerdown(state));
      if (asked && (await settlesWithin(tracked.exited, options.timeoutMs))) return;
      if (tracked.result) return;
      this.logger.warn('VM did not power off in time: quitting qemu', { workloadId: handle.workloadId, timeoutMs: options.timeoutMs, powerdownSent: asked });
      const quit = await this.serialize(handle.workloadId, () => this.qmpQuiet(state, 'quit'));
      // Without QMP, SIGTERM makes qemu quit the same way.
      if (!quit) this.signalGroup(tracked, 'SIGTERM');
      if (await settlesWithin(tracked.exited, this.config.quitWaitMs ?? 3000)) return;
      this.logger.warn('qemu did not quit: killing it', { workloadId: handle.workloadId });
    }
    this.signalGroup(tracked, 'SIGKILL');
    if (!(await settlesWithin(tracked.exited, this.config.killWaitMs ?? 5000))) {
      throw new UnavailableError(`qemu ${tracked.pid} did not exit after SIGKILL`);
    }
  }

  async destroy(handle: TaskHandle, options: DestroyOptions): Promise<void> {
    const state = stateOf(handle);
    const status = await this.inspect(handle);
    if (status.running) {
      if (!options.force) throw new FailedPreconditionError(`workload ${handle.workloadId} is still running`);
      const tracked = this.tracked.get(handle.workloadId) ?? this.adopt(handle.workloadId, state);
      await this.stop(handle, { signal: 'SIGKILL', timeoutMs: 0 }).catch(() => undefined);
      if (!tracked.result) throw new UnavailableError(`qemu ${state.pid} did not exit after SIGKILL`);
    }
    this.tracked.delete(handle.workloadId);
    await rm(state.dir, { recursive: true, force: true });
  }

  /**
   * The task directories whose qemu still runs, known to the agent or not
   * (the reconciler's view of orphaned VMs): a directory counts when its
   * pidfile names a live process whose command line is that task's qemu
   * (`-name <workload id>` and `-pidfile <that pidfile>`), so a reused pid
   * or a leftover directory of an ended VM is not taken for a VM.
   */
  async listLabelled(): Promise<LabelledRuntime[]> {
    let names: string[];
    try {
      names = await readdir(this.config.stateDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const found: LabelledRuntime[] = [];
    for (const workloadId of names.filter((n) => SAFE_ID.test(n))) {
      const dir = join(this.config.stateDir, workloadId);
      const info = await stat(dir).catch(() => undefined);
      if (!info?.isDirectory()) continue;
      const pid = await liveQemuOfTask(dir, workloadId);
      if (pid === undefined) continue;
      found.push({ workloadId, running: true, createdAt: info.birthtimeMs > 0 ? info.birthtime : info.mtime, displayId: String(pid) });
    }
    return found;
  }

  /** Kills the task directory's qemu (when it is still that task's) and removes the directory. Idempotent. */
  async removeLabelled(workloadId: string): Promise<void> {
    if (!SAFE_ID.test(workloadId)) throw new InvalidArgumentError('workload id is not usable as a directory name', { field: 'workloadId' });
    const dir = join(this.config.stateDir, workloadId);
    await this.serialize(workloadId, async () => {
      const pid = await liveQemuOfTask(dir, workloadId);
      if (pid !== undefined) {
        // spawnSupervised starts qemu as the leader of its own process group.
        killProcessGroup(pid, 'SIGKILL');
        const deadline = Date.now() + (this.config.killWaitMs ?? 5000);
        while ((await liveQemuOfTask(dir, workloadId)) !== undefined && Date.now() < deadline) await sleep(50);
        if ((await liveQemuOfTask(dir, workloadId)) !== undefined) throw new UnavailableError(`qemu ${pid} did not exit after SIGKILL`);
      }
      this.tracked.delete(workloadId);
      await rm(dir, { recursive: true, force: true });
    });
  }

  /**
   * Runs a command in the guest through its agent (see guest-ops.ts):
   * buffered, stdin given up front. Fails with FailedPreconditionError when
   * the guest agent does not answer.
   */
  async exec(handle: TaskHandle, argv: readonly string[], options: ExecOptions): Promise<ExecOutcome> {
    checkArgv(argv);
    return guestExec(this.agentSessions(handle), argv, options);
  }

  async readFile(handle: TaskHandle, path: string): Promise<AsyncIterable<Buffer>> {
    checkGuestPath(path);
    return guestReadFile(this.agentSessions(handle), path, { chunkBytes: this.config.guestAgentChunkBytes });
  }

  async writeFile(handle: TaskHandle, path: string, content: AsyncIterable<Buffer>, options: WriteFileOptions): Promise<{ bytes: number }> {
    checkGuestPath(path);
    return guestWriteFile(this.agentSessions(handle), path, content, options, { chunkBytes: this.config.guestAgentChunkBytes });
  }

  async listDirectory(handle: TaskHandle, path: string): Promise<FileEntry[]> {
    checkGuestPath(path);
    return guestListDirectory(this.agentSessions(handle), path);
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
    if (!isSameProcessAlive(state)) return { recovered: false, reason: `qemu ${state.pid} is gone` };
    this.adopt(handle.workloadId, state);
    return { recovered: true };
  }

  /** The end of the guest's serial console. */
  async readLogs(handle: TaskHandle, options: { tailBytes: number }): Promise<LogChunk> {
    return readFileTail(stateOf(handle).consoleLog, options.tailBytes);
  }

  /** The serial console from `offset`: an append-only file, so it can be followed. */
  async readLogsFrom(handle: TaskHandle, options: { offset: number; maxBytes: number }): Promise<LogRange> {
    return readFileRange(stateOf(handle).consoleLog, options);
  }

  /** The VM's run state as QMP reports it: running, paused, postmigrate, inmigrate, shutdown... */
  async vmStatus(handle: TaskHandle): Promise<string> {
    const state = this.liveState(handle);
    return this.serialize(handle.workloadId, () => this.qmp(state, (qmp) => queryStatus(qmp)));
  }

  async pause(handle: TaskHandle): Promise<void> {
    const state = this.liveState(handle);
    await this.serialize(handle.workloadId, () => this.qmp(state, (qmp) => qmp.execute('stop')));
  }

  async resume(handle: TaskHandle): Promise<void> {
    const state = this.liveState(handle);
    await this.serialize(handle.workloadId, () =>
      this.qmp(state, async (qmp) => {
        const status = await queryStatus(qmp);
        if (status === 'running') return;
        if (!LIVE_STATES.has(status)) throw new FailedPreconditionError(`VM ${handle.workloadId} cannot be resumed from state ${status}`);
        await qmp.execute('cont');
      }),
    );
  }

  /**
   * Pauses the VM, writes its memory and device state to `file` through
   * qemu's migration (to `exec:cat > FILE.partial`, renamed once complete),
   * reports progress while it runs, then resumes the VM unless asked to
   * leave it paused. Writes `<file>.json` (the machine, needed to restore)
   * and copies any disk the driver owns to `<file>.disk<N>.qcow2`.
   */
  async snapshot(handle: TaskHandle, file: string, onProgress?: (progress: SnapshotProgress) => void, options: SnapshotOptions = {}): Promise<SnapshotResult> {
    checkSnapshotPath(file);
    const state = this.liveState(handle);
    // A device-mapper clone is a block device: copying it with the snapshot
    // would cost the whole disk, and a restore could not share it.
    if (state.machine.disks.some((d) => d.clone && d.path.startsWith('/dev/'))) {
      throw new FailedPreconditionError(`VM ${handle.workloadId} runs on a device-mapper root disk: memory snapshots need a qcow2 one`);
    }
    const timeoutMs = options.timeoutMs ?? 10 * 60_000;
    return this.serialize(handle.workloadId, async () => {
      const started = Date.now();
      const partial = `${file}.partial`;
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
      // Guest memory holds the guest's secrets: the file is private from
      // its first byte (cat > truncates it and keeps the mode).
      await rm(partial, { force: true });
      await (await open(partial, 'wx', 0o600)).close();
      return this.qmp(state, async (qmp) => {
        const before = await queryStatus(qmp);
        if (!LIVE_STATES.has(before)) throw new FailedPreconditionError(`VM ${handle.workloadId} cannot be snapshotted in state ${before}`);
        if (before === 'running') await qmp.execute('stop');
        let done = false;
        try {
          await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SNAPSHOT_MAX_BANDWIDTH });
          await qmp.execute('migrate', { uri: migrationWriteUri(partial) });
          await pollMigration(qmp, started, started + timeoutMs, onProgress);
          const bytes = await waitForCompleteStream(partial);
          const diskCopies: Record<number, string> = {};
          // The VM is stopped and qemu flushed its disks when the migration completed.
          for (const [i, disk] of state.machine.disks.entries()) {
            if (!disk.owned && !disk.clone) continue;
            diskCopies[i] = `${file}.disk${i}.qcow2`;
            await copyFile(disk.path, diskCopies[i], constants.COPYFILE_FICLONE);
            await chmod(diskCopies[i], 0o600);
          }
          await rename(partial, file);
          const meta: SnapshotMeta = { format: SNAPSHOT_FORMAT, createdAt: new Date().toISOString(), sourceWorkloadId: handle.workloadId, bytes, machine: state.machine, diskCopies };
          await writeJsonAtomic(`${file}.json`, meta);
          done = true;
          return { file, bytes, durationMs: Date.now() - started };
        } finally {
          if (!done) await rm(partial, { force: true });
          // A failed snapshot always puts the VM back as it was.
          if (before === 'running' && !(done && options.leavePaused)) {
            await qmp.execute('cont').catch((err) => this.logger.error('could not resume VM after snapshot', { workloadId: handle.workloadId, error: (err as Error).message }));
          }
        }
      });
    });
  }

  /** Starts a new qemu from a snapshot (`-incoming`, same machine), then continues it unless asked not to. */
  async restoreFrom(file: string, spec: TaskSpec, options: RestoreOptions = {}): Promise<TaskHandle> {
    checkSnapshotPath(file);
    checkWorkloadId(spec.workloadId);
    checkPorts(spec.ports ?? []);
    const meta = await readSnapshotMeta(file);
    const check = await checkMigrationFile(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new NotFoundError(`snapshot ${file} does not exist`, { field: 'file' });
      throw err;
    });
    if (!check.complete) throw new FailedPreconditionError(`snapshot ${file} is unusable: ${check.reason}`, { field: 'file' });
    const choice = await this.accelerator();
    if (!choice.usable.includes(meta.machine.accelerator)) {
      throw new FailedPreconditionError(`snapshot was taken under ${meta.machine.accelerator}, which is not usable here`, { field: 'file' });
    }
    return this.serialize(spec.workloadId, async () => {
      const files = await this.prepareTaskDir(spec.workloadId);
      try {
        const disks: VmDisk[] = [];
        for (const [i, disk] of meta.machine.disks.entries()) {
          const copy = meta.diskCopies[i];
          if (copy) {
            const path = join(files.dir, `disk${i}.qcow2`);
            await copyFile(copy, path, constants.COPYFILE_FICLONE);
            disks.push({ ...disk, path, owned: true, clone: undefined });
          } else if (i === 0 && spec.vm?.disk) {
            disks.push({ path: spec.vm.disk, format: await this.diskFormat(spec.vm.disk) });
          } else {
            disks.push(disk);
          }
        }
        const handle = await this.launch(spec, { ...meta.machine, disks }, files, file);
        await this.finishIncoming(handle, options);
        return handle;
      } catch (err) {
        const tracked = this.tracked.get(spec.workloadId);
        if (tracked && !tracked.result) {
          this.signalGroup(tracked, 'SIGKILL');
          await settlesWithin(tracked.exited, this.config.killWaitMs ?? 5000);
        }
        this.tracked.delete(spec.workloadId);
        await rm(files.dir, { recursive: true, force: true });
        throw err;
      }
    });
  }

  private async decideAccelerator(): Promise<AcceleratorChoice> {
    const device = await checkKvmDevice(this.config.kvmDevice);
    const kvm: KvmState = { deviceOk: device.ok, deviceDetail: device.detail };
    const path = this.executor.resolve(this.qemuBinary);
    if (this.config.accelerator !== 'tcg' && device.ok && this.config.kvmProbe && path) {
      await ensurePrivateDir(this.config.stateDir);
      kvm.probe = await runKvmProbe({ qemuPath: path, workRoot: this.config.stateDir, probe: this.config.kvmProbe });
      this.logger.info('kvm probe finished', { passed: kvm.probe.passed, detail: kvm.probe.detail, ms: kvm.probe.durationMs });
    }
    const choice = chooseAccelerator(this.config.accelerator, kvm);
    this.logger.info('qemu accelerator chosen', { accelerator: choice.accelerator, reason: choice.reason });
    return choice;
  }

  private async prepareTaskDir(workloadId: string): Promise<VmRunFiles & { dir: string; qemuLog: string }> {
    const existing = this.tracked.get(workloadId);
    if (existing && !existing.result) throw new AlreadyExistsError(`VM ${workloadId} is already running`);
    const dir = join(this.config.stateDir, workloadId);
    const files = {
      dir,
      qmpSocket: join(dir, 'qmp.sock'),
      qgaSocket: join(dir, 'qga.sock'),
      consoleLog: join(dir, 'console.log'),
      pidFile: join(dir, 'qemu.pid'),
      qemuLog: join(dir, 'qemu.log'),
    };
    if (Buffer.byteLength(files.qmpSocket) > MAX_SOCKET_PATH) {
      throw new FailedPreconditionError(`the QMP socket path ${files.qmpSocket} is longer than ${MAX_SOCKET_PATH} bytes: use a shorter stateDir or workload id`);
    }
    const leftoverPid = await readPidFile(files.pidFile);
    if (leftoverPid !== undefined && isProcessAlive(leftoverPid)) {
      throw new AlreadyExistsError(`a qemu (pid ${leftoverPid}) still runs in ${dir}; recover or destroy it first`);
    }
    // Leftovers of an earlier run of the same workload.
    await rm(dir, { recursive: true, force: true });
    await ensurePrivateDir(dir);
    return files;
  }

  private async prepareDisks(dir: string, mode: 'microvm' | 'unikernel', paths: string[], fromVolumeManager: boolean): Promise<VmDisk[]> {
    const disks: VmDisk[] = [];
    for (const path of paths) disks.push({ path, format: await this.diskFormat(path) });
    if (fromVolumeManager && disks[0]) disks[0] = { ...disks[0], clone: true };
    if (mode === 'unikernel' && !fromVolumeManager && disks[0]) {
      // In the agent a unikernel boots its clone from the volume manager
      // (vm.disk, like a microVM's root disk). A caller without one (the
      // driver used on its own) still must not write the shared image: the
      // task writes to an overlay of its own (instant at any image size).
      const overlay = join(dir, 'disk0.qcow2');
      await this.executor.run(qemuImgCreateOverlay({ basePath: disks[0].path, baseFormat: disks[0].format as 'raw' | 'qcow2', clonePath: overlay }));
      disks[0] = { path: overlay, format: 'qcow2', owned: true };
    }
    return disks;
  }

  private async diskFormat(path: string): Promise<string> {
    const info = await this.executor.run(qemuImgInfo(path));
    if (info.format !== 'raw' && info.format !== 'qcow2') throw new InvalidArgumentError(`unsupported disk format ${JSON.stringify(info.format)}: use raw or qcow2`);
    return info.format;
  }

  private async launch(spec: TaskSpec, machine: VmMachine, files: VmRunFiles & { dir: string; qemuLog: string }, incomingFile?: string): Promise<TaskHandle> {
    const program = this.executor.resolve(this.qemuBinary);
    if (!program) throw new FailedPreconditionError(`${this.qemuBinary} is not installed on this host`);
    const ports = spec.ports ?? [];
    const args = buildQemuArgs(machine, files, { name: spec.workloadId, ports, hostAddress: this.hostAddress, egress: this.config.guestEgress ?? false, incomingFile });
    let child: SupervisedProcess;
    try {
      // The workload's env is not passed anywhere: qemu needs none, and the
      // guest has no way to receive it (kernel arguments are world-readable).
      child = await spawnSupervised({ program, args, env: { PATH: '/usr/local/bin:/usr/bin:/bin' }, cwd: files.dir, logPath: files.qemuLog });
    } catch (err) {
      throw new UnavailableError(`could not start qemu (${(err as NodeJS.ErrnoException).code ?? 'unknown error'})`);
    }
    const startTime = processStartTime(child.pid);
    const tracked: Tracked = { pid: child.pid, startTime, child, exited: child.wait().then(exitResultOf) };
    this.track(spec.workloadId, tracked);
    const state: QemuState = { pid: child.pid, startTime, ...files, machine, ports: [...ports] };
    const handle: TaskHandle = { driver: this.name, workloadId: spec.workloadId, displayId: String(child.pid), state: { ...state } };
    try {
      // Returns once qemu answers on QMP: the machine exists and runs (or waits for its incoming state).
      await this.qmp(state, (qmp) => queryStatus(qmp), { retryForMs: this.config.startTimeoutMs ?? 30_000, shouldRetry: () => !tracked.result });
    } catch (err) {
      const result = (await settlesWithin(tracked.exited, 200)) ? tracked.result : undefined;
      if (!result) {
        this.signalGroup(tracked, 'SIGKILL');
        await settlesWithin(tracked.exited, this.config.killWaitMs ?? 5000);
      }
      this.tracked.delete(spec.workloadId);
      const tail = (await readFileTail(files.qemuLog, 2048)).data.toString('utf8').trim();
      this.logger.warn('qemu failed to start', { workloadId: spec.workloadId, exitCode: result?.exitCode, signal: result?.signal, qemuLog: tail });
      throw new UnavailableError(
        result ? `qemu exited during start (${result.signal ?? `exit code ${result.exitCode}`})` : 'qemu did not open its QMP socket in time',
        { cause: new Error(tail || (err as Error).message) },
      );
    }
    return handle;
  }

  /** Waits for an -incoming qemu to load its snapshot, then continues it (unless asked not to). */
  private async finishIncoming(handle: TaskHandle, options: RestoreOptions): Promise<void> {
    const state = stateOf(handle);
    const tracked = this.attached(handle);
    const deadline = Date.now() + (this.config.restoreTimeoutMs ?? 120_000);
    await this.qmp(state, async (qmp) => {
      for (;;) {
        const status = await queryStatus(qmp);
        if (status !== 'inmigrate') break;
        if (Date.now() > deadline) throw new DeadlineExceededError('the snapshot did not load in time');
        await sleep(20);
      }
      if (!options.paused) await qmp.execute('cont');
    }).catch(async (err) => {
      if (await settlesWithin(tracked.exited, 200)) {
        const tail = (await readFileTail(state.qemuLog, 2048)).data.toString('utf8').trim();
        this.logger.warn('qemu failed to load a snapshot', { workloadId: handle.workloadId, qemuLog: tail });
        throw new UnavailableError('qemu exited while loading the snapshot', { cause: new Error(tail) });
      }
      throw err;
    });
  }

  /** Sends an ACPI powerdown to a running guest. False when the guest cannot act on it (paused) or QMP is unreachable. */
  private async requestPowerdown(state: QemuState): Promise<boolean> {
    try {
      return await withQmp(state.qmpSocket, async (qmp) => {
        if ((await queryStatus(qmp)) !== 'running') return false;
        await qmp.execute('system_powerdown');
        return true;
      });
    } catch (err) {
      this.logger.warn('could not send powerdown over QMP', { pid: state.pid, error: (err as Error).message });
      return false;
    }
  }

  /** Runs one QMP command, ignoring failures (qemu may exit before it answers). */
  private async qmpQuiet(state: QemuState, command: string): Promise<boolean> {
    try {
      await withQmp(state.qmpSocket, (qmp) => qmp.execute(command, undefined, { timeoutMs: 2000 }), { timeoutMs: 3000 });
      return true;
    } catch (err) {
      // `quit` often loses its answer: qemu exits first.
      return !(err instanceof QmpConnectionError && err.reason === 'connect');
    }
  }

  /** A QMP session on the VM's socket; connection problems become UnavailableError. */
  private async qmp<T>(state: QemuState, fn: (qmp: QmpClient) => Promise<T>, retry: QmpRetryOptions = {}): Promise<T> {
    let qmp: QmpClient;
    try {
      qmp = retry.retryForMs ? await QmpClient.connectWithRetry(state.qmpSocket, retry) : await QmpClient.connect(state.qmpSocket);
    } catch (err) {
      throw new UnavailableError(`cannot reach qemu ${state.pid} over QMP`, { cause: err });
    }
    try {
      return await fn(qmp);
    } catch (err) {
      if (err instanceof QmpCommandError) throw new FailedPreconditionError(`qemu refused ${err.command}: ${err.desc}`, { cause: err });
      if (err instanceof QmpConnectionError) throw new UnavailableError(`lost QMP connection to qemu ${state.pid}`, { cause: err });
      throw err;
    } finally {
      qmp.close();
    }
  }

  /**
   * Sessions with the VM's guest agent, one per step, one at a time (qemu
   * serves one client on the socket, and the stream is shared). A guest
   * that does not answer, or a socket that is not there, is "unavailable".
   */
  private agentSessions(handle: TaskHandle): Sessions {
    const state = this.liveState(handle);
    const tracked = this.attached(handle);
    const socket = state.qgaSocket;
    if (!socket || !state.machine.guestAgent) throw new FailedPreconditionError(`VM ${handle.workloadId} was started without a guest agent port`);
    const unavailable = (detail: string, cause: unknown) =>
      new FailedPreconditionError(`the guest agent of VM ${handle.workloadId} is unavailable: ${detail} (does the guest run qemu-ga, and is the VM running?)`, { cause });
    const sessions: Sessions = (fn) =>
      this.serialize(
        handle.workloadId,
        async () => {
          if (tracked.result) throw new FailedPreconditionError(`VM ${handle.workloadId} has exited`);
          let qga: QgaClient;
          try {
            qga = await QgaClient.connect(socket, { timeoutMs: this.config.guestAgentTimeoutMs ?? 5000, commandTimeoutMs: this.config.guestAgentCommandTimeoutMs ?? 30_000 });
          } catch (err) {
            throw unavailable(err instanceof QgaConnectionError && err.reason === 'timeout' ? 'it did not answer' : 'its channel cannot be opened', err);
          }
          try {
            return await fn(qga);
          } catch (err) {
            if (err instanceof QgaConnectionError) throw unavailable(err.reason === 'timeout' ? 'a command got no answer in time' : 'the channel closed', err);
            throw err;
          } finally {
            qga.close();
          }
        },
        this.agentLocks,
      );
    return sessions;
  }

  /** qemu serves one QMP client at a time: commands for one VM run one after another. */
  private serialize<T>(workloadId: string, fn: () => Promise<T>, locks = this.locks): Promise<T> {
    const previous = locks.get(workloadId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    const settled = next.catch(() => undefined);
    locks.set(workloadId, settled);
    void settled.then(() => {
      if (locks.get(workloadId) === settled) locks.delete(workloadId);
    });
    return next;
  }

  private liveState(handle: TaskHandle): QemuState {
    const tracked = this.attached(handle);
    if (tracked.result) throw new FailedPreconditionError(`VM ${handle.workloadId} has exited`);
    return stateOf(handle);
  }

  private adopt(workloadId: string, state: QemuState): Tracked {
    let timer: NodeJS.Timeout | undefined;
    const exited = new Promise<ExitResult>((resolve) => {
      timer = setInterval(() => {
        if (isSameProcessAlive(state)) return;
        clearInterval(timer);
        resolve({ exitCode: undefined, detail: UNKNOWN_EXIT_DETAIL });
      }, this.config.adoptedPollMs ?? 500);
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

  private signalGroup(tracked: Tracked, signal: NodeJS.Signals): void {
    if (tracked.child) {
      tracked.child.kill(signal);
      return;
    }
    if (isSameProcessAlive({ pid: tracked.pid, startTime: tracked.startTime })) killProcessGroup(tracked.pid, signal);
  }
}

/** `qemu-system-x86_64 --version` → "7.2.22". */
export function qemuVersionCommand(program: string): Command<string> {
  return {
    program,
    args: ['--version'],
    parse: parseQemuVersion,
    mapError: execErrorFromResult,
    timeoutMs: 10_000,
  };
}

export function parseQemuVersion(stdout: string): string {
  const match = /QEMU emulator version (\S+)/.exec(stdout);
  if (!match) throw new Error('unrecognised qemu --version output');
  return match[1];
}

async function queryStatus(qmp: QmpClient): Promise<string> {
  const result = await qmp.execute<{ status: string }>('query-status');
  return result.status;
}

interface MigrationInfo {
  status?: string;
  'error-desc'?: string;
  ram?: { transferred?: number; total?: number; remaining?: number };
}

/** Polls query-migrate until it completes; cancels it at the deadline. */
async function pollMigration(qmp: QmpClient, started: number, deadline: number, onProgress?: (p: SnapshotProgress) => void): Promise<MigrationInfo> {
  for (;;) {
    const info = await qmp.execute<MigrationInfo>('query-migrate');
    const status = info.status ?? 'none';
    onProgress?.({
      status,
      transferredBytes: info.ram?.transferred ?? 0,
      totalBytes: info.ram?.total ?? 0,
      remainingBytes: info.ram?.remaining ?? 0,
      elapsedMs: Date.now() - started,
    });
    if (status === 'completed') return info;
    if (status === 'failed' || status === 'cancelled') throw new UnavailableError(`snapshot failed: ${info['error-desc'] ?? status}`);
    if (Date.now() > deadline) {
      await qmp.execute('migrate_cancel').catch(() => undefined);
      throw new DeadlineExceededError('snapshot did not finish in time');
    }
    await sleep(50);
  }
}

/** The writer may still be draining the pipe when qemu reports completion. */
async function waitForCompleteStream(path: string, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const check = await checkMigrationFile(path).catch(() => undefined);
    if (check?.complete) return check.bytes;
    if (Date.now() > deadline) throw new UnavailableError(`snapshot file is incomplete: ${check?.reason ?? 'not written'}`);
    await sleep(20);
  }
}

async function readSnapshotMeta(file: string): Promise<SnapshotMeta> {
  let raw: string;
  try {
    raw = await readFile(`${file}.json`, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`snapshot ${file} has no ${file}.json beside it`, { field: 'file' });
    throw err;
  }
  const meta = JSON.parse(raw) as Partial<SnapshotMeta>;
  if (meta.format !== SNAPSHOT_FORMAT || !meta.machine || !Array.isArray(meta.machine.disks)) {
    throw new FailedPreconditionError(`${file}.json is not a qemu snapshot description`, { field: 'file' });
  }
  return { ...meta, diskCopies: meta.diskCopies ?? {} } as SnapshotMeta;
}

/** The pid of the qemu of task directory `dir` when it still runs: its pidfile's process, with `-name <workloadId>` and `-pidfile <dir>/qemu.pid` in its argv. */
async function liveQemuOfTask(dir: string, workloadId: string): Promise<number | undefined> {
  const pidFile = join(dir, 'qemu.pid');
  const pid = await readPidFile(pidFile);
  if (pid === undefined || !isProcessAlive(pid)) return undefined;
  let argv: string[];
  try {
    argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  } catch {
    return undefined; // gone meanwhile
  }
  return isQemuArgvOfTask(argv, workloadId, pidFile) ? pid : undefined;
}

/** Whether a process's argv is the qemu this driver launched for `workloadId` with `pidFile`. */
export function isQemuArgvOfTask(argv: readonly string[], workloadId: string, pidFile: string): boolean {
  const valueOf = (flag: string) => {
    const at = argv.indexOf(flag);
    return at >= 0 ? argv[at + 1] : undefined;
  };
  return valueOf('-name') === workloadId && valueOf('-pidfile') === pidFile;
}

async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function checkWorkloadId(id: string): void {
  if (!SAFE_ID.test(id)) throw new InvalidArgumentError('workload id is not usable as a directory name', { field: 'spec.workloadId' });
}

function stateOf(handle: TaskHandle): QemuState {
  const state = handle.state as Partial<QemuState>;
  if (typeof state.pid !== 'number' || typeof state.dir !== 'string' || typeof state.qmpSocket !== 'string' || typeof state.consoleLog !== 'string' || !state.machine) {
    throw new FailedPreconditionError(`handle of workload ${handle.workloadId} is not a qemu driver handle`);
  }
  return state as QemuState;
}

function isSameProcessAlive(state: { pid: number; startTime?: string }): boolean {
  if (!isProcessAlive(state.pid)) return false;
  const now = processStartTime(state.pid);
  return state.startTime === undefined || now === undefined || now === state.startTime;
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
