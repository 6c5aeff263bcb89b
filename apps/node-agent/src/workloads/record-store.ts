import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '@corral/logging';
import { ensurePrivateDir, isTemporaryFile, readJsonFile, writeFileAtomic } from '../state/atomic-file';
import type { WorkloadRecord } from './workload-record';

/**
 * One private JSON file per workload under `<stateDir>/workloads`, replaced
 * atomically. Writes of one workload are queued so a slow older write can
 * never land after a newer one.
 */
export class RecordStore {
  readonly dir: string;
  private readonly queues = new Map<string, Promise<void>>();

  constructor(
    stateDir: string,
    private readonly logger: Logger,
  ) {
    this.dir = join(stateDir, 'workloads');
  }

  async init(): Promise<void> {
    await ensurePrivateDir(this.dir);
  }

  /** Persists a copy of the record as it is now. */
  save(record: WorkloadRecord): Promise<void> {
    const id = record.spec.workloadId;
    const snapshot = `${JSON.stringify(record, null, 2)}\n`;
    const previous = this.queues.get(id) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => writeFileAtomic(this.pathOf(id), snapshot));
    this.queues.set(id, next);
    void next.finally(() => {
      if (this.queues.get(id) === next) this.queues.delete(id);
    }).catch(() => undefined);
    return next;
  }

  /** Deletes the workload's file, after any write still queued for it. Idempotent. */
  remove(workloadId: string): Promise<void> {
    const previous = this.queues.get(workloadId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => rm(this.pathOf(workloadId), { force: true }));
    this.queues.set(workloadId, next);
    void next.finally(() => {
      if (this.queues.get(workloadId) === next) this.queues.delete(workloadId);
    }).catch(() => undefined);
    return next;
  }

  async loadAll(): Promise<WorkloadRecord[]> {
    const records: WorkloadRecord[] = [];
    for (const name of await readdir(this.dir)) {
      const path = join(this.dir, name);
      if (isTemporaryFile(name)) {
        // A write cut short by a crash; the file it was replacing is intact.
        await rm(path, { force: true });
        continue;
      }
      if (!name.endsWith('.json')) continue;
      try {
        const record = await readJsonFile<WorkloadRecord>(path);
        if (record && record.version === 1 && record.spec?.workloadId) records.push(record);
        else this.logger.error('ignoring unrecognised workload record', { file: name });
      } catch (err) {
        this.logger.error('ignoring unreadable workload record', { file: name, err });
      }
    }
    return records;
  }

  pathOf(workloadId: string): string {
    return join(this.dir, `${workloadId}.json`);
  }
}
