import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '@corral/domain';
import { readJsonFile, writeJsonAtomic } from '../state/atomic-file';

// The memory snapshots a host holds, as files: every snapshot of workload W
// lives in `<stateDir>/snapshots/W/` as `<id>.state` (what a restore reads)
// plus whatever else its driver wrote beside it under the same `<id>.`
// prefix (qemu: `<id>.state.json`, `<id>.state.disk<N>.qcow2`), and
// `<id>.meta.json`, written by the agent once the snapshot is complete. So
// the list is read from disk and outlives agent restarts, and a snapshot
// cut short by a crash (no `.state`, only a `.state.partial`) is never
// listed. Which snapshots are being taken or read by a restore is known in
// memory only: neither outlives the agent process that does it.

/** Snapshot ids as the agent makes them, and names usable as a directory. */
export const SNAPSHOT_ID = /^snap-[0-9A-Za-z]+-[0-9a-f]+$/;
export const SAFE_DIR_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

const STATE_SUFFIX = '.state';
const META_SUFFIX = '.meta.json';

export interface SnapshotInfo {
  snapshotId: string;
  /** The workload it was taken of. */
  sourceWorkloadId: string;
  /** The driver that took it; empty for snapshots taken before the agent recorded it. */
  driver: string;
  createdAt: Date;
  /** Host storage of all its files: allocated blocks (`stat.blocks * 512`), not apparent lengths. */
  sizeBytes: number;
}

interface SnapshotMetaFile {
  version: 1;
  snapshotId: string;
  sourceWorkloadId: string;
  driver: string;
  createdAt: string;
}

export function checkSnapshotId(snapshotId: string): string {
  if (typeof snapshotId !== 'string' || !SNAPSHOT_ID.test(snapshotId)) throw new InvalidArgumentError('snapshotId is malformed', { field: 'snapshotId' });
  return snapshotId;
}

export function checkSourceWorkloadId(workloadId: string, field = 'workloadId'): string {
  if (typeof workloadId !== 'string' || !SAFE_DIR_NAME.test(workloadId)) throw new InvalidArgumentError(`${field} is malformed`, { field });
  return workloadId;
}

/** A new snapshot id: `snap-<UTC time to the second>-<random>`, sortable by time. */
export function newSnapshotId(now: Date): string {
  return `snap-${now.toISOString().replace(/[-:.]/g, '').slice(0, 15)}-${randomBytes(4).toString('hex')}`;
}

export class SnapshotStore {
  /** `workloadId/snapshotId` → what is using it now. */
  private readonly busy = new Map<string, { taking: boolean; restores: number; deleting: boolean }>();

  constructor(private readonly stateDir: string) {}

  dirOf(workloadId: string): string {
    return join(this.stateDir, 'snapshots', checkSourceWorkloadId(workloadId));
  }

  /** The file a driver writes the snapshot to, and a restore reads. */
  fileOf(workloadId: string, snapshotId: string): string {
    return join(this.dirOf(workloadId), `${checkSnapshotId(snapshotId)}${STATE_SUFFIX}`);
  }

  /**
   * Runs `take` (the driver writing the snapshot) with the snapshot marked
   * as being taken, then records it complete. A failed `take` leaves
   * whatever it wrote to be removed.
   */
  async taking<T>(workloadId: string, snapshotId: string, driver: string, createdAt: Date, take: (file: string) => Promise<T>): Promise<T> {
    const file = this.fileOf(workloadId, snapshotId);
    await mkdir(this.dirOf(workloadId), { recursive: true, mode: 0o700 });
    const use = this.use(workloadId, snapshotId);
    use.taking = true;
    try {
      const result = await take(file);
      const meta: SnapshotMetaFile = { version: 1, snapshotId, sourceWorkloadId: workloadId, driver, createdAt: createdAt.toISOString() };
      await writeJsonAtomic(join(this.dirOf(workloadId), `${snapshotId}${META_SUFFIX}`), meta);
      return result;
    } catch (err) {
      await this.removeFiles(workloadId, snapshotId).catch(() => undefined);
      throw err;
    } finally {
      use.taking = false;
      this.release(workloadId, snapshotId);
    }
  }

  /** Runs `restore` with the snapshot marked as read, so it is not deleted underneath. */
  async reading<T>(workloadId: string, snapshotId: string, restore: (file: string) => Promise<T>): Promise<T> {
    const file = this.fileOf(workloadId, snapshotId);
    const use = this.use(workloadId, snapshotId);
    if (use.deleting) {
      this.release(workloadId, snapshotId);
      throw new FailedPreconditionError(`snapshot ${snapshotId} is being deleted`, { field: 'snapshotId' });
    }
    use.restores++;
    try {
      return await restore(file);
    } finally {
      use.restores--;
      this.release(workloadId, snapshotId);
    }
  }

  /** Whether the snapshot's state file is there (complete: drivers write it under another name until they are done). */
  async exists(workloadId: string, snapshotId: string): Promise<boolean> {
    try {
      return (await lstat(this.fileOf(workloadId, snapshotId))).isFile();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** The complete snapshots of a workload, oldest first; none when it has no directory. */
  async list(workloadId: string): Promise<SnapshotInfo[]> {
    const dir = this.dirOf(workloadId);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const ids = new Set(names.filter((n) => n.endsWith(STATE_SUFFIX)).map((n) => n.slice(0, -STATE_SUFFIX.length)).filter((id) => SNAPSHOT_ID.test(id)));
    const snapshots: SnapshotInfo[] = [];
    for (const snapshotId of ids) {
      if (this.busy.get(this.key(workloadId, snapshotId))?.taking) continue;
      const files = names.filter((n) => n.startsWith(`${snapshotId}.`));
      let sizeBytes = 0;
      let stateModified: Date | undefined;
      for (const name of files) {
        const stats = await lstat(join(dir, name)).catch(() => undefined);
        if (!stats) continue;
        sizeBytes += stats.blocks * 512;
        if (name === `${snapshotId}${STATE_SUFFIX}`) stateModified = stats.mtime;
      }
      if (!stateModified) continue; // deleted while we looked
      const meta = await readJsonFile<SnapshotMetaFile>(join(dir, `${snapshotId}${META_SUFFIX}`)).catch(() => undefined);
      snapshots.push({
        snapshotId,
        sourceWorkloadId: workloadId,
        driver: meta?.driver ?? '',
        createdAt: meta?.createdAt ? new Date(meta.createdAt) : stateModified,
        sizeBytes,
      });
    }
    return snapshots.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.snapshotId.localeCompare(b.snapshotId));
  }

  /**
   * Deletes a snapshot's files: the state file first (no restore can start
   * from a half-deleted snapshot), its record last. Idempotent: false when
   * there was nothing. Refused while it is being taken or restored from.
   */
  async delete(workloadId: string, snapshotId: string): Promise<boolean> {
    checkSnapshotId(snapshotId);
    const use = this.use(workloadId, snapshotId);
    try {
      if (use.taking) throw new FailedPreconditionError(`snapshot ${snapshotId} is still being taken`, { field: 'snapshotId' });
      if (use.restores > 0) throw new FailedPreconditionError(`snapshot ${snapshotId} is in use: a restore from it is under way`, { field: 'snapshotId' });
      if (use.deleting) return false;
      use.deleting = true;
      try {
        return await this.removeFiles(workloadId, snapshotId);
      } finally {
        use.deleting = false;
      }
    } finally {
      this.release(workloadId, snapshotId);
    }
  }

  private async removeFiles(workloadId: string, snapshotId: string): Promise<boolean> {
    const dir = this.dirOf(workloadId);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    const state = `${snapshotId}${STATE_SUFFIX}`;
    const meta = `${snapshotId}${META_SUFFIX}`;
    const mine = names.filter((n) => n.startsWith(`${snapshotId}.`));
    if (mine.length === 0) return false;
    const ordered = [...mine.filter((n) => n === state), ...mine.filter((n) => n !== state && n !== meta), ...mine.filter((n) => n === meta)];
    for (const name of ordered) await rm(join(dir, name), { force: true });
    return mine.includes(state);
  }

  private key(workloadId: string, snapshotId: string): string {
    return `${workloadId}/${snapshotId}`;
  }

  private use(workloadId: string, snapshotId: string) {
    const key = this.key(workloadId, snapshotId);
    let use = this.busy.get(key);
    if (!use) {
      use = { taking: false, restores: 0, deleting: false };
      this.busy.set(key, use);
    }
    return use;
  }

  private release(workloadId: string, snapshotId: string): void {
    const key = this.key(workloadId, snapshotId);
    const use = this.busy.get(key);
    if (use && !use.taking && use.restores === 0 && !use.deleting) this.busy.delete(key);
  }
}
