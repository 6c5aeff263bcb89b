import { accessSync, constants, statSync } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';
import { AlreadyExistsError, DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError } from '@corral/domain';
import { createExecutor, defaultBaseEnv, isExecError, resolveProgram, spawnInteractive, type Executor, type InteractiveProcess } from '@corral/exec';
import type { Logger } from '@corral/logging';
import type {
  DestroyOptions,
  Driver,
  DriverFingerprint,
  ExitResult,
  LabelledRuntime,
  LabelledRuntimesCapability,
  LogChunk,
  LogsCapability,
  RecoverOutcome,
  StopOptions,
  TaskHandle,
  TaskSpec,
  TaskStatus,
} from '../driver';
import type {
  ExecCapability,
  ExecOptions,
  ExecOutcome,
  ExecSession,
  ExecSessionOptions,
  FileEntry,
  FilesCapability,
  InteractiveExecCapability,
  PauseCapability,
  WriteFileOptions,
} from '../driver';
import { sessionOverProcess } from '../exec-session';
import { pullImage, type PulledImage, type PullProgressEvent, type PullRequest, type PullSettings } from './image-pull';
import { checkSandboxFilePath, checkSandboxPath } from '../sandbox-path';
import {
  ContainerCommandExit,
  containerName,
  envInjection,
  hasFinished,
  isLive,
  podmanExec,
  podmanExecSessionArgs,
  podmanImport,
  podmanImageId,
  podmanImages,
  podmanLoad,
  podmanTag,
  validateImageRef,
  type ImageInfo,
  podmanInfo,
  podmanInspect,
  podmanKill,
  podmanLogs,
  podmanMessage,
  podmanPause,
  podmanPsCorral,
  podmanRm,
  podmanRun,
  podmanUnpause,
  podmanVersion,
  podmanWait,
  WORKLOAD_ID_LABEL,
  type ContainerInspection,
  type ContainerSummary,
  type PodmanCli,
  type PodmanInfo,
  type PodmanRunSettings,
  type Ulimit,
} from './commands';
import {
  ByteReader,
  firstTarEntry,
  mapCpError,
  MAX_TAR_FILE_BYTES,
  podmanCpInArgs,
  podmanCpOutArgs,
  podmanListDirectory,
  podmanRemoveInside,
  podmanRenameInside,
  UPLOAD_PREFIX,
  type TarFirstEntry,
} from './container-files';
import { readCriLogFrom, readCriLogTail, readCriLogTailWithOffset } from './cri-log';
import type { LogRange } from '../../workloads/log-follow';
import { EXEC_MARKER_VARIABLE, killMarkedProcesses } from './exec-reaper';
import { execResizer } from './exec-resize';
import { collect, spoolUpload, uploadTar } from './upload-spool';
import { serveFileOnce } from './file-server';
import { clampUlimit, explicitUlimitsRequired, readHardLimits, type HardLimits } from './host-limits';

// Workloads as podman containers (DESIGN §3), one `podman` CLI call per
// operation, each a Command run by the executor. The handle holds the
// container id; the container carries the label corral.workload-id, so a
// restarted agent (recover) or the reconciler (listCorralContainers) finds it.

export const PODMAN_DRIVER_NAME = 'podman';

export const DEFAULT_NOFILE: Ulimit = { soft: 1024, hard: 1024 };
export const DEFAULT_NPROC: Ulimit = { soft: 4096, hard: 4096 };

export interface PodmanDriverOptions {
  logger: Logger;
  /** Runs every podman call; must allow `program`. Default: an executor that allows podman only. */
  executor?: Executor;
  /** podman as named on the executor's allow-list. Default `podman`. */
  program?: string;
  /** OCI runtime to use. Default: runc when installed (crun refuses hybrid cgroup layouts), else podman's default. */
  runtime?: string;
  /** Open-files limit of every container, lowered to the host's hard limit. Default 1024:1024. */
  nofile?: Ulimit;
  /** Process limit of every container, lowered to the host's hard limit. Default 4096:4096. */
  nproc?: Ulimit;
  /** Address host ports are published on. Default 127.0.0.1. */
  hostIp?: string;
  /** podman log driver; null leaves podman's default. Default k8s-file, which readLogs reads directly. */
  logDriver?: string | null;
  /** How often running containers are checked for exit (one `podman ps` for all). Default 1 s. */
  exitPollMs?: number;
  /** After SIGKILL, how long stop waits for the exit before giving up. Default 10 s. */
  killWaitMs?: number;
  /** The agent's hard rlimits; read from /proc/self/limits by default. */
  hardLimits?: Partial<HardLimits>;
  /**
   * Where the env file of variables podman must not see in its own
   * environment (PATH, LD_*...) briefly lives during `podman run`. Default
   * /dev/shm (memory, never disk) when writable, else the OS temp dir.
   */
  envFileDir?: string;
}

/** What the handle carries for this driver. */
interface PodmanState {
  containerId: string;
  containerName: string;
}

/** What inspect reports: TaskStatus, plus whether a running container is frozen. */
export type PodmanTaskStatus = { running: true; paused: boolean } | { running: false; exit: ExitResult | undefined };

export interface ImportProgress {
  /** transferring: podman is reading the tarball; importing: it has all of it and stores the image; done. */
  phase: 'transferring' | 'importing' | 'done';
  bytesRead: number;
  totalBytes: number;
}

export interface ImportedImage {
  imageId: string;
  ref: string;
  bytes: number;
}

/** How podman is used on this host, as found by fingerprinting. */
interface Setup {
  cli: PodmanCli;
  run: PodmanRunSettings;
}

interface Probe {
  fingerprint: DriverFingerprint;
  setup?: Setup;
}

/** A container this driver instance watches for its exit. */
interface Tracked {
  containerId: string;
  /** Order of registration, to tell whether a `podman ps` started after it. */
  seq: number;
  exited: Promise<ExitResult>;
  resolve(result: ExitResult): void;
  result?: ExitResult;
}

const REMOVED_DETAIL = 'the container was removed before its exit status was seen';
/** Where runc is looked for besides PATH (it lives in sbin on Debian). */
/** Bounds the log path cache (entries of removed containers are never asked for again). */
const MAX_REMEMBERED_LOG_PATHS = 1024;
const RUNTIME_SEARCH_DIRS = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class PodmanDriver implements Driver, LogsCapability, PauseCapability, ExecCapability, InteractiveExecCapability, FilesCapability, LabelledRuntimesCapability {
  readonly name = PODMAN_DRIVER_NAME;
  private readonly executor: Executor;
  private readonly program: string;
  private readonly logger: Logger;
  private readonly exitPollMs: number;
  private readonly killWaitMs: number;
  private readonly envFileDir: string;
  private readonly tracked = new Map<string, Tracked>();
  /** Log file per container id, for following logs without a podman call per poll. */
  private readonly logPaths = new Map<string, string>();
  private setup?: Promise<Setup>;
  private seq = 0;
  private pollTimer?: NodeJS.Timeout;
  private polling?: Promise<void>;
  private closed = false;

  constructor(private readonly options: PodmanDriverOptions) {
    this.logger = options.logger;
    this.program = options.program ?? 'podman';
    this.executor = options.executor ?? createExecutor({ allowedPrograms: [this.program], logger: options.logger });
    this.exitPollMs = options.exitPollMs ?? 1000;
    this.killWaitMs = options.killWaitMs ?? 10_000;
    this.envFileDir = options.envFileDir ?? defaultEnvFileDir();
  }

  async fingerprint(): Promise<DriverFingerprint> {
    const probe = await this.probe();
    if (probe.setup) this.setup = Promise.resolve(probe.setup);
    return probe.fingerprint;
  }

  async start(spec: TaskSpec): Promise<TaskHandle> {
    const setup = await this.ensureSetup();
    const name = containerName(spec.workloadId);
    const { envFile } = envInjection(spec.env);
    let envDir: string | undefined;
    let containerId: string;
    try {
      let envFilePath: string | undefined;
      if (envFile !== undefined) {
        envDir = await mkdtemp(join(this.envFileDir, 'corral-podman-env-')); // 0700
        envFilePath = join(envDir, 'env');
      }
      const command = podmanRun(spec, setup.run, setup.cli, envFilePath);
      if (envFilePath) await writeFile(envFilePath, envFile ?? '', { mode: 0o600, flag: 'wx' });
      try {
        containerId = await this.executor.run(command);
      } catch (err) {
        // A run that failed after creating the container (port in use, command
        // not found...) leaves it behind; a name clash is someone else's.
        if (!(err instanceof AlreadyExistsError)) await this.executor.run(podmanRm(name, setup.cli)).catch(() => undefined);
        throw err;
      }
    } finally {
      // podman has copied the values into the container's config by now.
      if (envDir) await rm(envDir, { recursive: true, force: true });
    }
    this.track(spec.workloadId, containerId);
    const state: PodmanState = { containerId, containerName: name };
    return { driver: this.name, workloadId: spec.workloadId, displayId: containerId.slice(0, 12), state: { ...state } };
  }

  async wait(handle: TaskHandle): Promise<ExitResult> {
    const tracked = this.tracked.get(handle.workloadId);
    if (!tracked) throw new FailedPreconditionError(`workload ${handle.workloadId} is not attached to this agent; recover it first`);
    return tracked.exited;
  }

  async stop(handle: TaskHandle, options: StopOptions): Promise<void> {
    const { containerId } = stateOf(handle);
    const cli = await this.cli();
    if (this.tracked.get(handle.workloadId)?.result) return;
    const container = await this.inspectOrUndefined(containerId);
    if (!container) return this.settleRemoved(handle.workloadId);
    if (isLive(container.status)) {
      // A frozen container cannot take a signal until it is thawed.
      if (container.status === 'paused') await ignoreWrongState(this.executor.run(podmanUnpause(containerId, cli)));
      await ignoreWrongState(this.executor.run(podmanKill(containerId, options.signal, cli)));
      if (!(await this.exitsWithin(containerId, options.timeoutMs))) {
        this.logger.warn('workload ignored its stop signal: killing it', { workloadId: handle.workloadId, signal: options.signal, timeoutMs: options.timeoutMs });
        await ignoreWrongState(this.executor.run(podmanKill(containerId, 'SIGKILL', cli)));
        if (!(await this.exitsWithin(containerId, this.killWaitMs))) {
          throw new UnavailableError(`container ${containerId.slice(0, 12)} did not exit after SIGKILL`);
        }
      }
    }
    await this.settleFromPodman(handle.workloadId, containerId);
  }

  async destroy(handle: TaskHandle, options: DestroyOptions): Promise<void> {
    const { containerId } = stateOf(handle);
    const cli = await this.cli();
    const container = await this.inspectOrUndefined(containerId);
    if (container) {
      if (isLive(container.status)) {
        if (!options.force) throw new FailedPreconditionError(`workload ${handle.workloadId} is still running`);
        // Killed and reaped first, so that `wait` reports how it ended.
        if (container.status === 'paused') await ignoreWrongState(this.executor.run(podmanUnpause(containerId, cli)));
        await ignoreWrongState(this.executor.run(podmanKill(containerId, 'SIGKILL', cli)));
        if (await this.exitsWithin(containerId, this.killWaitMs)) await this.settleFromPodman(handle.workloadId, containerId);
      } else if (hasFinished(container.status)) {
        await this.settleFromPodman(handle.workloadId, containerId);
      }
      try {
        await this.executor.run(podmanRm(containerId, cli));
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
      }
    }
    const tracked = this.tracked.get(handle.workloadId);
    if (tracked) {
      this.settle(tracked, { exitCode: undefined, detail: REMOVED_DETAIL });
      this.tracked.delete(handle.workloadId);
    }
  }

  async inspect(handle: TaskHandle): Promise<PodmanTaskStatus> {
    const { containerId } = stateOf(handle);
    const tracked = this.tracked.get(handle.workloadId);
    const container = await this.inspectOrUndefined(containerId);
    if (!container) return { running: false, exit: tracked?.result };
    if (isLive(container.status)) return { running: true, paused: container.status === 'paused' };
    const exit = hasFinished(container.status) ? exitResultOf(container) : undefined;
    if (tracked && exit) this.settle(tracked, exit);
    return { running: false, exit: tracked?.result ?? exit };
  }

  async recover(handle: TaskHandle): Promise<RecoverOutcome> {
    if (this.tracked.has(handle.workloadId)) return { recovered: true };
    const { containerId } = stateOf(handle);
    const container = await this.inspectOrUndefined(containerId);
    if (!container) return { recovered: false, reason: `container ${containerId.slice(0, 12)} no longer exists` };
    if (container.labels[WORKLOAD_ID_LABEL] !== handle.workloadId) {
      return { recovered: false, reason: `container ${containerId.slice(0, 12)} does not belong to workload ${handle.workloadId}` };
    }
    const tracked = this.track(handle.workloadId, container.id);
    // Exited while the agent was down: its exit code is still known.
    if (hasFinished(container.status)) this.settle(tracked, exitResultOf(container));
    return { recovered: true };
  }

  async readLogs(handle: TaskHandle, options: { tailBytes: number }): Promise<LogChunk> {
    const { containerId } = stateOf(handle);
    const container = await this.inspectOrUndefined(containerId);
    if (!container) return { data: Buffer.alloc(0), truncated: false };
    if (container.logDriver === 'k8s-file' && container.logPath) {
      try {
        const chunk = await readCriLogTail(container.logPath, { tailBytes: options.tailBytes });
        if (chunk) return chunk;
      } catch (err) {
        this.logger.debug('could not read the container log file: asking podman', { workloadId: handle.workloadId, err });
      }
    }
    // Every line is at least one byte, so tailBytes lines hold tailBytes bytes.
    const lines = Math.min(Math.max(1, options.tailBytes), 100_000);
    const all = await this.executor.run(podmanLogs(containerId, lines, await this.cli()));
    const data = all.subarray(Math.max(0, all.length - options.tailBytes));
    return { data, truncated: data.length < all.length || countLines(all) >= lines };
  }

  /**
   * Following reads conmon's k8s-file log by file offset (record
   * boundaries), so a follow costs no podman call per poll; another log
   * driver cannot be followed (FailedPrecondition, never a faked follow).
   */
  async readLogsFrom(handle: TaskHandle, options: { offset: number; maxBytes: number }): Promise<LogRange> {
    const path = await this.followableLogPath(handle);
    if (!path) return { data: Buffer.alloc(0), size: options.offset, nextOffset: options.offset };
    return readCriLogFrom(path, options);
  }

  async readLogTailForFollow(handle: TaskHandle, options: { tailBytes: number }): Promise<{ data: Buffer; nextOffset: number }> {
    const path = await this.followableLogPath(handle);
    const tail = path ? await readCriLogTailWithOffset(path, { tailBytes: options.tailBytes }) : undefined;
    return tail ? { data: tail.data, nextOffset: tail.nextOffset } : { data: Buffer.alloc(0), nextOffset: 0 };
  }

  /** The container's k8s-file log path (asked once per container), undefined once the container is gone. */
  private async followableLogPath(handle: TaskHandle): Promise<string | undefined> {
    const { containerId } = stateOf(handle);
    const known = this.logPaths.get(containerId);
    if (known) return known;
    const container = await this.inspectOrUndefined(containerId);
    if (!container) return undefined;
    if (container.logDriver !== 'k8s-file' || !container.logPath) {
      throw new FailedPreconditionError(`the container's ${container.logDriver ?? 'unknown'} log cannot be followed (only k8s-file)`);
    }
    if (this.logPaths.size >= MAX_REMEMBERED_LOG_PATHS) this.logPaths.clear();
    this.logPaths.set(containerId, container.logPath);
    return container.logPath;
  }

  async pause(handle: TaskHandle): Promise<void> {
    await this.executor.run(podmanPause(stateOf(handle).containerId, await this.cli()));
  }

  async resume(handle: TaskHandle): Promise<void> {
    await this.executor.run(podmanUnpause(stateOf(handle).containerId, await this.cli()));
  }

  async exec(handle: TaskHandle, argv: readonly string[], options: ExecOptions): Promise<ExecOutcome> {
    const command = podmanExec(stateOf(handle).containerId, argv, options, await this.cli());
    try {
      return await this.executor.run(command);
    } catch (err) {
      if (err instanceof ContainerCommandExit) return err.outcome;
      if (isExecError(err) && err.reason === 'timeout') {
        // Only the podman client is killed; the command may go on inside the container.
        throw new DeadlineExceededError(`the command did not finish within ${options.timeoutMs} ms`, { cause: err });
      }
      throw err;
    }
  }

  /**
   * `podman exec --interactive [--tty]`: stdin, stdout and stderr stream
   * through the podman client. The podman client's own stdin is a pipe, so
   * it cannot pass a window size on; a TTY session's `resize` goes to the
   * session's conmon instead (exec-resize.ts).
   */
  async execSession(handle: TaskHandle, argv: readonly string[], options: ExecSessionOptions): Promise<ExecSession> {
    const { containerId } = stateOf(handle);
    const cli = await this.cli();
    const injection = envInjection(options.env ?? {});
    let envDir: string | undefined;
    let envFilePath: string | undefined;
    if (injection.envFile !== undefined) {
      envDir = await mkdtemp(join(this.envFileDir, 'corral-podman-env-')); // 0700
      envFilePath = join(envDir, 'env');
      await writeFile(envFilePath, injection.envFile, { mode: 0o600, flag: 'wx' });
    }
    const cleanup = async () => {
      if (envDir) await rm(envDir, { recursive: true, force: true });
    };
    let child: InteractiveProcess;
    const marker = randomBytes(16).toString('hex');
    try {
      const args = podmanExecSessionArgs(
        containerId,
        argv,
        { tty: options.tty, envNames: injection.names, envFilePath, workingDir: options.workingDir, marker: `${EXEC_MARKER_VARIABLE}=${marker}` },
        cli,
      );
      child = await this.spawnPodman(args, injection.processEnv);
    } catch (err) {
      await cleanup();
      throw err;
    }
    // Killing the podman client alone would leave the command running in the container.
    const session = sessionOverProcess(child, {
      onKill: () => killMarkedProcesses(marker),
      ...(options.tty
        ? { resize: execResizer(marker, containerId, { onError: (err) => this.logger.warn('could not resize an exec terminal', { workloadId: handle.workloadId, err }) }) }
        : {}),
    });
    void session.exited.finally(cleanup);
    return session;
  }

  async readFile(handle: TaskHandle, path: string): Promise<AsyncIterable<Buffer>> {
    const { containerId } = stateOf(handle);
    const target = checkSandboxFilePath(path);
    const child = await this.spawnPodman(podmanCpOutArgs(containerId, target, await this.cli()));
    child.stdin.end();
    const stderr = collect(child.stderr);
    const reader = new ByteReader(child.stdout[Symbol.asyncIterator]());
    // Ends podman and stops reading what it still had to say.
    const stop = () => {
      child.kill();
      child.stdout.destroy();
    };
    let entry: TarFirstEntry;
    try {
      entry = await firstTarEntry(reader);
    } catch (err) {
      stop();
      throw err;
    }
    if (entry.kind !== 'file') {
      if (entry.kind !== 'empty') stop();
      const status = await child.exited;
      if (entry.kind === 'directory') throw new InvalidArgumentError(`${target} is a directory`, { field: 'path' });
      if (entry.kind === 'other') throw new InvalidArgumentError(`${target} is not a regular file`, { field: 'path' });
      throw mapCpError({ exitCode: status.exitCode, stderr: stderr() }, containerId, target);
    }
    const body = entry.body;
    return (async function* () {
      try {
        yield* body;
      } finally {
        // Done (or the reader went away): podman only has the tar's padding left to write.
        stop();
      }
    })();
  }

  async writeFile(handle: TaskHandle, path: string, content: AsyncIterable<Buffer>, options: WriteFileOptions): Promise<{ bytes: number }> {
    const { containerId } = stateOf(handle);
    const target = checkSandboxFilePath(path);
    const cli = await this.cli();
    const dir = posix.dirname(target);
    const temp = posix.join(dir, `${UPLOAD_PREFIX}${randomBytes(8).toString('hex')}`);
    // Spooled on the host first: an oversized or broken upload never reaches the container.
    const spool = await spoolUpload(content, Math.min(options.maxBytes, MAX_TAR_FILE_BYTES), tmpdir());
    try {
      const child = await this.spawnPodman(podmanCpInArgs(containerId, dir, cli));
      const stderr = collect(child.stderr);
      child.stdout.resume();
      await pipeline(uploadTar(posix.basename(temp), spool.path, spool.bytes, options.mode ?? 0o644), child.stdin).catch(() => undefined);
      const status = await child.exited;
      if (status.exitCode !== 0) throw mapCpError({ exitCode: status.exitCode, stderr: stderr() }, containerId, dir);
      try {
        await this.executor.run(podmanRenameInside(containerId, temp, target, cli));
      } catch (err) {
        await this.executor.run(podmanRemoveInside(containerId, temp, cli)).catch(() => undefined);
        throw err;
      }
      return { bytes: spool.bytes };
    } finally {
      await spool.remove();
    }
  }

  async listDirectory(handle: TaskHandle, path: string): Promise<FileEntry[]> {
    const { containerId } = stateOf(handle);
    return this.executor.run(podmanListDirectory(containerId, checkSandboxPath(path), await this.cli()));
  }

  /** The podman client with piped stdio, for streams the buffered executor cannot carry. */
  private async spawnPodman(args: readonly string[], extraEnv: Record<string, string> = {}): Promise<InteractiveProcess> {
    const program = this.executor.resolve(this.program);
    if (!program) throw new FailedPreconditionError('podman is not installed on this host');
    try {
      return await spawnInteractive({ program, args, env: { ...defaultBaseEnv(), ...extraEnv } });
    } catch {
      throw new UnavailableError('could not start podman');
    }
  }

  /**
   * Imports a rootfs tarball as image `ref` (`podman import`). Progress is
   * the bytes podman has read of the tarball, which it fetches from a
   * one-shot HTTP server on 127.0.0.1 run by this process.
   */
  async importImage(tarPath: string, ref: string, onProgress?: (progress: ImportProgress) => void): Promise<ImportedImage> {
    const cli = await this.cli();
    let lastReport = 0;
    let served;
    try {
      served = await serveFileOnce(tarPath, (sent, total) => {
        const now = Date.now();
        if (sent < total && now - lastReport < 100) return;
        lastReport = now;
        onProgress?.({ phase: 'transferring', bytesRead: sent, totalBytes: total });
        if (sent === total) onProgress?.({ phase: 'importing', bytesRead: sent, totalBytes: total });
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`no image tarball at ${tarPath}`, { field: 'tarPath' });
      throw err;
    }
    try {
      const command = podmanImport(served.url, ref, { env: { NO_PROXY: '127.0.0.1', no_proxy: '127.0.0.1' } }, cli);
      const imageId = await this.executor.run(command);
      onProgress?.({ phase: 'done', bytesRead: served.size, totalBytes: served.size });
      return { imageId, ref, bytes: served.size };
    } finally {
      await served.close();
    }
  }

  /**
   * Loads an OCI or docker archive (`podman load`) and names the image `ref`
   * (`podman tag`). podman reads the file itself, so there is no byte
   * progress of its reading to report.
   */
  async loadImage(archivePath: string, ref: string): Promise<ImportedImage> {
    validateImageRef(ref);
    const cli = await this.cli();
    const { size } = await stat(archivePath);
    const loaded = await this.executor.run(podmanLoad(archivePath, cli));
    await this.executor.run(podmanTag(loaded[0] as string, ref, cli));
    const imageId = await this.executor.run(podmanImageId(ref, cli));
    return { imageId, ref, bytes: size };
  }

  /** The images in podman's store. */
  async listImages(): Promise<ImageInfo[]> {
    return this.executor.run(podmanImages(await this.cli()));
  }

  /** Pulls an image from a registry (`podman pull`, see image-pull.ts), reporting podman's progress. */
  async pullImage(
    settings: PullSettings,
    request: PullRequest,
    options: { onProgress?: (progress: PullProgressEvent) => void; signal?: AbortSignal } = {},
  ): Promise<PulledImage> {
    return pullImage({ executor: this.executor, cli: await this.cli(), logger: this.logger }, settings, request, options);
  }

  /** Every container labelled corral.workload-id on this host, for the reconciler's orphan search. */
  async listCorralContainers(): Promise<ContainerSummary[]> {
    return this.executor.run(podmanPsCorral(await this.cli()));
  }

  async listLabelled(): Promise<LabelledRuntime[]> {
    return (await this.listCorralContainers()).flatMap((c) =>
      c.workloadId
        ? [{ workloadId: c.workloadId, running: isLive(c.state), createdAt: c.createdAt ? new Date(c.createdAt) : new Date(0), displayId: c.id.slice(0, 12) }]
        : [],
    );
  }

  /** `podman rm --force` of every container labelled with the workload id. */
  async removeLabelled(workloadId: string): Promise<void> {
    const cli = await this.cli();
    for (const container of await this.listCorralContainers()) {
      if (container.workloadId !== workloadId) continue;
      try {
        await this.executor.run(podmanRm(container.id, cli));
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
      }
    }
    this.tracked.delete(workloadId);
  }

  /** The container's details as podman reports them (status paused, OOM kill...). */
  async inspectContainer(handle: TaskHandle): Promise<ContainerInspection> {
    return this.executor.run(podmanInspect(stateOf(handle).containerId, await this.cli()));
  }

  /** Stops watching for exits; waits for a poll in progress. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = undefined;
    await this.polling;
  }

  // --- host setup -----------------------------------------------------------------

  private async cli(): Promise<PodmanCli> {
    return (await this.ensureSetup()).cli;
  }

  private ensureSetup(): Promise<Setup> {
    this.setup ??= this.probe().then((probe) => {
      if (!probe.setup) {
        this.setup = undefined;
        throw new UnavailableError(`podman is not usable on this host: ${probe.fingerprint.detail}`);
      }
      return probe.setup;
    });
    return this.setup;
  }

  /**
   * Works out how to run podman here: whether it answers at all, whether it
   * needs global options (cgroupfs where systemd is absent), which OCI
   * runtime to ask for and which ulimits the host allows. No container is
   * created: `podman info` answering is the health check.
   */
  private async probe(): Promise<Probe> {
    const unhealthy = (version: string, detail: string): Probe => ({ fingerprint: { name: this.name, healthy: false, version, detail } });
    let cli: PodmanCli = { program: this.program, globalArgs: [] };
    let version: string;
    try {
      version = await this.executor.run(podmanVersion(cli));
    } catch (err) {
      return unhealthy('', describeFailure('podman version', err));
    }
    let info: PodmanInfo;
    try {
      info = await this.executor.run(podmanInfo(cli));
    } catch (err) {
      const extra = globalArgsToRetry(err);
      if (!extra) return unhealthy(version, describeFailure('podman info', err));
      cli = { program: this.program, globalArgs: extra };
      try {
        info = await this.executor.run(podmanInfo(cli));
      } catch (retryErr) {
        return unhealthy(version, describeFailure(`podman ${extra.join(' ')} info`, retryErr));
      }
    }
    const runtime = this.chooseRuntime(info);
    const hard = this.options.hardLimits ?? readHardLimits();
    const nofile = clampUlimit(this.options.nofile ?? DEFAULT_NOFILE, hard.nofile);
    const nproc = clampUlimit(this.options.nproc ?? DEFAULT_NPROC, hard.nproc);
    const logDriver = this.options.logDriver === null ? undefined : (this.options.logDriver ?? 'k8s-file');
    const setup: Setup = { cli, run: { runtime: runtime.name, ulimits: { nofile, nproc }, hostIp: this.options.hostIp ?? '127.0.0.1', logDriver } };
    const detail = [
      `podman ${version} (${info.rootless ? 'rootless' : 'root'})`,
      `runtime ${runtime.note}`,
      `cgroup ${info.cgroupVersion} via ${info.cgroupManager}`,
      `storage ${info.graphDriver}`,
      ...(cli.globalArgs.length ? [`global options ${cli.globalArgs.join(' ')}`] : []),
      `ulimits nofile=${nofile.soft}:${nofile.hard} nproc=${nproc.soft}:${nproc.hard} ${
        explicitUlimitsRequired(hard)
          ? `(explicit: required, host hard limits nofile ${hard.nofile} nproc ${hard.nproc} are below podman's defaults)`
          : '(explicit: not required here)'
      }`,
    ].join('; ');
    return { fingerprint: { name: this.name, healthy: true, version, detail }, setup };
  }

  private chooseRuntime(info: PodmanInfo): { name?: string; note: string } {
    if (this.options.runtime) return { name: this.options.runtime, note: `${this.options.runtime} (configured)` };
    if (info.ociRuntime === 'runc') return { name: 'runc', note: 'runc (podman default)' };
    if (resolveProgram('runc', `${process.env.PATH ?? ''}:${RUNTIME_SEARCH_DIRS}`)) {
      return { name: 'runc', note: `runc (installed; preferred over podman's default ${info.ociRuntime}, which refuses hybrid cgroup layouts)` };
    }
    return { name: undefined, note: `${info.ociRuntime} (podman default; runc is not installed)` };
  }

  // --- exit watching ------------------------------------------------------------

  private track(workloadId: string, containerId: string): Tracked {
    let resolve!: (result: ExitResult) => void;
    const exited = new Promise<ExitResult>((r) => (resolve = r));
    const tracked: Tracked = { containerId, seq: ++this.seq, exited, resolve };
    this.tracked.set(workloadId, tracked);
    this.schedulePoll();
    return tracked;
  }

  private settle(tracked: Tracked, result: ExitResult): void {
    if (tracked.result) return;
    tracked.result = result;
    tracked.resolve(result);
  }

  private settleRemoved(workloadId: string): void {
    const tracked = this.tracked.get(workloadId);
    if (tracked) this.settle(tracked, { exitCode: undefined, detail: REMOVED_DETAIL });
  }

  /** Records a finished container's exit for `wait`, as podman reports it. */
  private async settleFromPodman(workloadId: string, containerId: string, fallbackCode?: number): Promise<void> {
    const tracked = this.tracked.get(workloadId);
    if (!tracked || tracked.result) return;
    const container = await this.inspectOrUndefined(containerId);
    if (!container) {
      this.settle(tracked, fallbackCode === undefined ? { exitCode: undefined, detail: REMOVED_DETAIL } : { exitCode: fallbackCode });
    } else if (hasFinished(container.status)) {
      this.settle(tracked, exitResultOf(container));
    }
  }

  private schedulePoll(): void {
    if (this.closed || this.pollTimer || this.polling) return;
    if (![...this.tracked.values()].some((t) => !t.result)) return;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = undefined;
      this.polling = this.poll().finally(() => {
        this.polling = undefined;
        this.schedulePoll();
      });
    }, this.exitPollMs);
    // Watching must not keep a stopping agent alive.
    this.pollTimer.unref();
  }

  /** One `podman ps` for every watched container, then an inspect of each that has ended. */
  private async poll(): Promise<void> {
    const seqAtStart = this.seq;
    let containers: ContainerSummary[];
    try {
      containers = await this.executor.run(podmanPsCorral(await this.cli()));
    } catch (err) {
      this.logger.warn('could not check containers for exits', { err });
      return;
    }
    const byId = new Map(containers.map((c) => [c.id, c]));
    for (const [workloadId, tracked] of this.tracked) {
      if (tracked.result) continue;
      const container = byId.get(tracked.containerId);
      try {
        if (!container) {
          // Registered after ps started: it may simply not have been listed yet.
          if (tracked.seq <= seqAtStart) this.settleRemoved(workloadId);
        } else if (hasFinished(container.state)) {
          await this.settleFromPodman(workloadId, tracked.containerId, container.exitCode);
        }
      } catch (err) {
        this.logger.warn('could not read a container exit', { workloadId, containerId: tracked.containerId.slice(0, 12), err });
      }
    }
  }

  // --- helpers ------------------------------------------------------------------

  private async inspectOrUndefined(containerId: string): Promise<ContainerInspection | undefined> {
    try {
      return await this.executor.run(podmanInspect(containerId, await this.cli()));
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  /** Whether the container has ended within `ms` (`podman wait`, bounded by the executor's timeout). */
  private async exitsWithin(containerId: string, ms: number): Promise<boolean> {
    try {
      await this.executor.run(podmanWait(containerId, ms, await this.cli()));
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return true;
      if (isExecError(err) && err.reason === 'timeout') return false;
      throw err;
    }
  }
}

// TaskStatus is the contract; PodmanTaskStatus must stay assignable to it.
const _statusIsTaskStatus = (status: PodmanTaskStatus): TaskStatus => status;
void _statusIsTaskStatus;

function stateOf(handle: TaskHandle): PodmanState {
  const state = handle.state as Partial<PodmanState>;
  if (typeof state.containerId !== 'string' || !/^[0-9a-f]{12,64}$/.test(state.containerId) || typeof state.containerName !== 'string') {
    throw new FailedPreconditionError(`handle of workload ${handle.workloadId} is not a podman driver handle`);
  }
  return state as PodmanState;
}

export function exitResultOf(container: ContainerInspection): ExitResult {
  const details: string[] = [];
  if (container.oomKilled) details.push('killed by the out-of-memory killer (memory limit reached)');
  if (container.error) details.push(container.error);
  return details.length ? { exitCode: container.exitCode, detail: details.join('; ') } : { exitCode: container.exitCode };
}

/** Signalling or thawing a container that has just exited is not a failure of stop. */
async function ignoreWrongState(run: Promise<void>): Promise<void> {
  try {
    await run;
  } catch (err) {
    if (err instanceof FailedPreconditionError || err instanceof NotFoundError) return;
    throw err;
  }
}

/**
 * Global options that may make podman work where `podman info` failed:
 * without systemd (containers, minimal hosts) podman must be told to manage
 * cgroups itself and keep events in a file.
 */
function globalArgsToRetry(err: unknown): string[] | undefined {
  if (!isExecError(err) || err.reason !== 'exit') return undefined;
  const args: string[] = [];
  if (/systemd|dbus|cgroup manager/i.test(err.stderrTail)) args.push('--cgroup-manager', 'cgroupfs');
  if (/journal/i.test(err.stderrTail)) args.push('--events-backend', 'file');
  return args.length ? args : undefined;
}

function describeFailure(what: string, err: unknown): string {
  if (isExecError(err)) {
    if (err.reason === 'not-installed') return 'podman is not installed';
    if (err.reason === 'exit') return `${what} failed: ${podmanMessage(err.stderrTail) || err.message}`;
    return `${what} failed: ${err.message}`;
  }
  return `${what} failed: ${err instanceof Error ? err.message : String(err)}`;
}

function defaultEnvFileDir(): string {
  try {
    accessSync('/dev/shm', constants.W_OK);
    if (statSync('/dev/shm').isDirectory()) return '/dev/shm';
  } catch {
    // no shared memory dir here
  }
  return tmpdir();
}

function countLines(buf: Buffer): number {
  let count = 0;
  for (let i = buf.indexOf(0x0a); i >= 0; i = buf.indexOf(0x0a, i + 1)) count++;
  return count;
}

