import { createHash } from 'node:crypto';
import { access, readdir, realpath, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '@corral/domain';
import type { Executor } from '@corral/exec';
import type { Logger } from '@corral/logging';
import { Mutex } from '../ports/mutex';
import { ensurePrivateDir, isTemporaryFile, readJsonFile, writeJsonAtomic } from '../state/atomic-file';
import type {
  BaseInfo,
  CloneInfo,
  CloneState,
  DiskFormat,
  PrepareBaseOptions,
  ReconcileReport,
  VolumeClone,
  VolumeInventory,
  VolumeManager,
  VolumeManagerKind,
  VolumeUsage,
} from './volume-manager';

// What both volume managers share: the persisted record of bases and
// clones, one lock, and the crash-safe order of every operation. An intent
// is written before anything is created or deleted on the host (a clone is
// recorded `creating` before its files exist, `removing` before they go), so
// `reconcile` at start-up can finish or roll back whatever a crash cut short,
// delete files no record owns and drop records whose files vanished. A
// base's reference count is the number of clone records that name it:
// derived, never stored, so it cannot drift from the clones.

export interface VolumeManagerOptions {
  /** The agent's state dir; a manager keeps `<stateDir>/volumes/<kind>/` (state.json, clones/). */
  stateDir: string;
  /** Runs qemu-img (qcow2) or losetup and dmsetup (device-mapper). */
  executor: Executor;
  logger: Logger;
  now?: () => Date;
}

/** Identifies one version of a file: a replaced or modified image has another. */
export interface Fingerprint {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
}

export interface BaseRecord {
  baseId: string;
  /** Real path (symlinks resolved). */
  imagePath: string;
  format: DiskFormat;
  virtualBytes: number;
  fingerprint: Fingerprint;
  registeredAt: string;
  /** device-mapper: the read-only loop device over the image while clones use it. */
  originDevice?: string;
}

export interface CloneRecord {
  workloadId: string;
  baseId: string | undefined;
  state: CloneState;
  path: string;
  format: DiskFormat;
  virtualBytes: number;
  /** Host files the clone owns; all must exist for a ready clone. */
  files: string[];
  createdAt: string;
  dm?: { name: string; uuid: string; cowDevice?: string };
}

export interface VolumeState {
  version: 1;
  kind: VolumeManagerKind;
  bases: Record<string, BaseRecord>;
  clones: Record<string, CloneRecord>;
}

/** The clone-specific part a manager plans before anything is created. */
export type ClonePlan = Pick<CloneRecord, 'path' | 'format' | 'files' | 'dm'>;

const WORKLOAD_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export abstract class RecordedVolumeManager implements VolumeManager {
  /** `<stateDir>/volumes/<kind>` */
  readonly dir: string;
  /** Where clone files (qcow2 overlays, copy-on-write stores) live; nothing else may. */
  readonly filesDir: string;
  protected readonly statePath: string;
  protected readonly executor: Executor;
  protected readonly logger: Logger;
  protected readonly lock = new Mutex();
  protected readonly now: () => Date;
  private current: VolumeState | undefined;
  private loading: Promise<VolumeState> | undefined;

  protected constructor(
    readonly kind: VolumeManagerKind,
    options: VolumeManagerOptions,
  ) {
    this.dir = join(options.stateDir, 'volumes', kind);
    this.filesDir = join(this.dir, 'clones');
    this.statePath = join(this.dir, 'state.json');
    this.executor = options.executor;
    this.logger = options.logger.child({ component: `volumes-${kind}` });
    this.now = options.now ?? (() => new Date());
  }

  // ---- what each implementation provides -------------------------------

  /** Format and guest-visible size of a base image; refuses images this manager cannot use. */
  protected abstract inspectImage(imagePath: string, options: PrepareBaseOptions): Promise<{ format: DiskFormat; virtualBytes: number }>;
  /** Where the workload's clone will live. Creates nothing. */
  protected abstract planClone(base: BaseRecord, workloadId: string): ClonePlan;
  /** Creates the clone on the host. May `commit` progress (device names) as it goes. */
  protected abstract createClone(base: BaseRecord, clone: CloneRecord): Promise<void>;
  /** Deletes whatever of the clone exists on the host, in dependency order. Idempotent. */
  protected abstract destroyClone(clone: CloneRecord): Promise<void>;
  /** Frees what a base holds on the host (nothing for qcow2). Idempotent. */
  protected abstract releaseBaseResources(base: BaseRecord): Promise<void>;

  /** A ready clone whose files exist: device checks (device-mapper revives lost devices). */
  protected async reconcileReady(_clone: CloneRecord, _report: ReconcileReport): Promise<void> {
    // nothing beyond the files for file-only clones
  }

  /** A flatten cut short: by default the clone is simply ready again, still on its base. */
  protected async reconcileFlattening(clone: CloneRecord): Promise<void> {
    await this.commit((s) => {
      s.clones[clone.workloadId].state = 'ready';
    });
  }

  /** Host objects no record owns (device-mapper devices, loop devices). */
  protected async reconcileHost(_report: ReconcileReport): Promise<void> {
    // nothing for file-only clones
  }

  // ---- the VolumeManager contract --------------------------------------

  prepareBase(imagePath: string, options: PrepareBaseOptions = {}): Promise<string> {
    return this.lock.run(() => this.prepareLocked(imagePath, options));
  }

  clone(baseId: string, workloadId: string): Promise<VolumeClone> {
    return this.lock.run(() => this.cloneLocked(baseId, workloadId));
  }

  cloneImage(imagePath: string, workloadId: string, options: PrepareBaseOptions = {}): Promise<VolumeClone> {
    return this.lock.run(async () => {
      checkWorkloadId(workloadId);
      return this.cloneLocked(await this.prepareLocked(imagePath, options), workloadId);
    });
  }

  async get(workloadId: string): Promise<VolumeClone | undefined> {
    const clone = (await this.readState()).clones[workloadId];
    return clone && (clone.state === 'ready' || clone.state === 'flattening') ? viewOf(clone) : undefined;
  }

  async usage(workloadId: string): Promise<VolumeUsage> {
    const clone = (await this.readState()).clones[workloadId];
    if (!clone) throw new NotFoundError(`no volume for workload ${workloadId}`, { field: 'workloadId' });
    let allocatedBytes = 0;
    for (const file of clone.files) {
      const st = await stat(file);
      allocatedBytes += st.blocks * 512;
    }
    return { apparentBytes: clone.virtualBytes, allocatedBytes };
  }

  remove(workloadId: string): Promise<void> {
    return this.lock.run(async () => {
      const clone = (await this.readState()).clones[workloadId];
      if (!clone) return;
      await this.commit((s) => {
        s.clones[workloadId].state = 'removing';
      });
      // If this fails the record stays `removing`: a retry or reconcile finishes it.
      await this.destroyClone(clone);
      await this.dropClone(workloadId);
      this.logger.info('volume removed', { workloadId });
      if (clone.baseId) await this.releaseIfUnused(clone.baseId);
    });
  }

  releaseBase(baseId: string): Promise<void> {
    return this.lock.run(async () => {
      const state = await this.readState();
      const base = state.bases[baseId];
      if (!base) return;
      const refs = refsOf(state, baseId);
      if (refs > 0) throw new FailedPreconditionError(`base ${baseId} is used by ${refs} clone(s)`, { field: 'baseId' });
      await this.releaseBaseResources(base);
      await this.commit((s) => {
        delete s.bases[baseId];
      });
    });
  }

  async list(): Promise<VolumeInventory> {
    const state = await this.readState();
    return {
      kind: this.kind,
      bases: Object.values(state.bases).map((b): BaseInfo => ({ baseId: b.baseId, imagePath: b.imagePath, format: b.format, virtualBytes: b.virtualBytes, refs: refsOf(state, b.baseId) })),
      clones: Object.values(state.clones).map((c): CloneInfo => ({ ...viewOf(c), state: c.state, files: [...c.files] })),
    };
  }

  reconcile(): Promise<ReconcileReport> {
    return this.lock.run(async () => {
      const report: ReconcileReport = { interrupted: [], recordsWithoutFiles: [], orphans: [], releasedBases: [], revived: [] };
      this.current = undefined; // from disk, whatever this instance believed
      const initial = await this.readState();
      for (const name of await readdir(this.dir)) {
        if (isTemporaryFile(name)) await rm(join(this.dir, name), { force: true });
      }

      for (const clone of Object.values(initial.clones)) {
        const id = clone.workloadId;
        try {
          if (clone.state === 'creating' || clone.state === 'removing') {
            // Never handed out (creating) or already given up (removing): finish the removal.
            await this.destroyClone(clone);
            await this.dropClone(id);
            report.interrupted.push(id);
          } else if (clone.state === 'flattening') {
            await this.reconcileFlattening(clone);
            report.interrupted.push(id);
          } else if (!(await allExist(clone.files))) {
            await this.destroyClone(clone);
            await this.dropClone(id);
            report.recordsWithoutFiles.push(id);
          } else {
            await this.reconcileReady(clone, report);
          }
        } catch (err) {
          this.logger.error('volume reconcile failed for a clone; will retry at next start', { workloadId: id, err });
        }
      }

      await this.reconcileHost(report);

      const owned = new Set(Object.values((await this.readState()).clones).flatMap((c) => c.files));
      for (const name of await readdir(this.filesDir)) {
        const path = join(this.filesDir, name);
        if (owned.has(path)) continue;
        await rm(path, { force: true, recursive: true });
        report.orphans.push(path);
      }

      for (const base of Object.values((await this.readState()).bases)) {
        if (await this.releaseIfUnused(base.baseId)) report.releasedBases.push(base.baseId);
      }
      const changed = Object.values(report).some((list: string[]) => list.length > 0);
      if (changed) this.logger.info('volumes reconciled', { ...report });
      return report;
    });
  }

  // ---- shared steps -----------------------------------------------------

  private async prepareLocked(imagePath: string, options: PrepareBaseOptions): Promise<string> {
    if (typeof imagePath !== 'string' || imagePath === '') throw new InvalidArgumentError('imagePath is required', { field: 'imagePath' });
    if (options.format !== undefined && options.format !== 'raw' && options.format !== 'qcow2') {
      throw new InvalidArgumentError('format must be raw or qcow2', { field: 'format' });
    }
    let real: string;
    try {
      real = await realpath(resolve(imagePath));
    } catch {
      throw new NotFoundError('base image not found', { field: 'imagePath' });
    }
    const fingerprint = await fingerprintOf(real);
    if (!fingerprint) throw new InvalidArgumentError('base image must be a regular file', { field: 'imagePath' });
    const baseId = baseIdOf(real, fingerprint);
    if ((await this.readState()).bases[baseId]) return baseId;

    const { format, virtualBytes } = await this.inspectImage(real, options);
    await this.commit((s) => {
      s.bases[baseId] = { baseId, imagePath: real, format, virtualBytes, fingerprint, registeredAt: this.now().toISOString() };
    });
    this.logger.info('base image registered', { baseId, format, virtualBytes });
    return baseId;
  }

  private async cloneLocked(baseId: string, workloadId: string): Promise<VolumeClone> {
    checkWorkloadId(workloadId);
    const state = await this.readState();
    const existing = state.clones[workloadId];
    if (existing) {
      if (existing.state === 'ready' && existing.baseId === baseId) return viewOf(existing);
      throw new FailedPreconditionError(`workload ${workloadId} already has a volume (${existing.state}${existing.baseId === baseId ? '' : ', on another base'}): remove it first`, {
        field: 'workloadId',
      });
    }
    const base = state.bases[baseId];
    if (!base) throw new NotFoundError(`base ${baseId} is not registered`, { field: 'baseId' });
    const now = await fingerprintOf(base.imagePath);
    if (!now || !sameFingerprint(now, base.fingerprint)) {
      throw new FailedPreconditionError(`the image of base ${baseId} changed or vanished since it was registered`, { field: 'baseId' });
    }

    const record: CloneRecord = {
      workloadId,
      baseId,
      state: 'creating',
      virtualBytes: base.virtualBytes,
      createdAt: this.now().toISOString(),
      ...this.planClone(base, workloadId),
    };
    await this.commit((s) => {
      s.clones[workloadId] = record;
    });
    try {
      await this.createClone(base, record);
    } catch (err) {
      await this.rollBack(workloadId, baseId);
      throw err;
    }
    const ready = await this.commit((s) => {
      s.clones[workloadId].state = 'ready';
    });
    this.logger.info('volume cloned', { workloadId, baseId });
    return viewOf(ready.clones[workloadId]);
  }

  private async rollBack(workloadId: string, baseId: string): Promise<void> {
    // The record as createClone left it: it may name devices made so far.
    const partial = (await this.readState()).clones[workloadId];
    try {
      if (partial) await this.destroyClone(partial);
      await this.dropClone(workloadId);
      await this.releaseIfUnused(baseId);
    } catch (err) {
      // The `creating` record stays; reconcile finishes the rollback.
      this.logger.error('could not roll back a failed clone', { workloadId, err });
    }
  }

  /** Releases the base when no clone names it any more. True when it did. */
  protected async releaseIfUnused(baseId: string): Promise<boolean> {
    const state = await this.readState();
    const base = state.bases[baseId];
    if (!base || refsOf(state, baseId) > 0) return false;
    try {
      await this.releaseBaseResources(base);
    } catch (err) {
      // The record stays, so reconcile tries again; the clone is gone either way.
      this.logger.warn('could not release an unused base', { baseId, err });
      return false;
    }
    await this.commit((s) => {
      delete s.bases[baseId];
    });
    this.logger.info('base image released', { baseId });
    return true;
  }

  protected async dropClone(workloadId: string): Promise<void> {
    await this.commit((s) => {
      delete s.clones[workloadId];
    });
  }

  /**
   * The state as last persisted, loaded on first use. Concurrent first
   * uses (reads do not take the lock) share one load, so a late load can
   * never overwrite a newer committed state.
   */
  protected readState(): Promise<VolumeState> {
    if (this.current) return Promise.resolve(this.current);
    this.loading ??= this.load().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  private async load(): Promise<VolumeState> {
    await ensurePrivateDir(this.dir);
    await ensurePrivateDir(this.filesDir);
    const stored = await readJsonFile<VolumeState>(this.statePath);
    if (stored && (stored.version !== 1 || stored.kind !== this.kind || typeof stored.bases !== 'object' || typeof stored.clones !== 'object')) {
      throw new Error(`${this.statePath} is not ${this.kind} volume state this agent understands`);
    }
    this.current = stored ?? { version: 1, kind: this.kind, bases: {}, clones: {} };
    return this.current;
  }

  /** Applies `mutate` to a copy, persists it atomically, and only then makes it current. */
  protected async commit(mutate: (draft: VolumeState) => void): Promise<VolumeState> {
    const draft = structuredClone(await this.readState());
    mutate(draft);
    await writeJsonAtomic(this.statePath, draft);
    this.current = draft;
    return draft;
  }
}

export function checkWorkloadId(workloadId: string): void {
  if (typeof workloadId !== 'string' || !WORKLOAD_ID.test(workloadId)) {
    throw new InvalidArgumentError(`workloadId must match ${WORKLOAD_ID.source}`, { field: 'workloadId' });
  }
}

export function refsOf(state: VolumeState, baseId: string): number {
  return Object.values(state.clones).filter((c) => c.baseId === baseId).length;
}

/** What callers see of a clone record. */
export function viewOf(clone: CloneRecord): VolumeClone {
  return { workloadId: clone.workloadId, baseId: clone.baseId, path: clone.path, format: clone.format, virtualBytes: clone.virtualBytes };
}

/** Undefined when the path is missing or not a regular file. */
async function fingerprintOf(path: string): Promise<Fingerprint | undefined> {
  try {
    const st = await stat(path);
    return st.isFile() ? { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs } : undefined;
  } catch {
    return undefined;
  }
}

function sameFingerprint(a: Fingerprint, b: Fingerprint): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/** Stable for one version of one file, so registering it again (even after a restart) finds the same base. */
function baseIdOf(realPath: string, f: Fingerprint): string {
  const digest = createHash('sha256').update(`${realPath}\0${f.dev}\0${f.ino}\0${f.size}\0${f.mtimeMs}`).digest('hex');
  return `base-${digest.slice(0, 20)}`;
}

export async function allExist(paths: readonly string[]): Promise<boolean> {
  for (const path of paths) {
    try {
      await access(path);
    } catch {
      return false;
    }
  }
  return true;
}
