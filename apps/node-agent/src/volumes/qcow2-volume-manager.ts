import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedPreconditionError, NotFoundError } from '@corral/domain';
import { diskFormatOf, qemuImgCreateOverlay, qemuImgFlatten, qemuImgInfo } from './qemu-img';
import { RecordedVolumeManager, viewOf, type BaseRecord, type ClonePlan, type CloneRecord, type VolumeManagerOptions } from './recorded-volume-manager';
import type { PrepareBaseOptions, VolumeClone } from './volume-manager';

// Clones as qcow2 overlays: `qemu-img create -f qcow2 -b BASE -F FMT` writes
// a ~200 KiB header that reads through to the base, in ~15 ms whatever the
// base's size. The base is never written: qemu opens backing files
// read-only. Works on any filesystem, with no kernel support needed.

export class Qcow2VolumeManager extends RecordedVolumeManager {
  constructor(options: VolumeManagerOptions) {
    super('qcow2', options);
  }

  protected async inspectImage(imagePath: string, options: PrepareBaseOptions) {
    const info = await this.executor.run(qemuImgInfo(imagePath, { format: options.format }));
    return { format: diskFormatOf(info.format), virtualBytes: info.virtualBytes };
  }

  protected planClone(_base: BaseRecord, workloadId: string): ClonePlan {
    const path = join(this.filesDir, `${workloadId}.qcow2`);
    return { path, format: 'qcow2', files: [path] };
  }

  protected async createClone(base: BaseRecord, clone: CloneRecord): Promise<void> {
    // A file left by a crash before the record existed would make qemu-img
    // fail or, worse, be mistaken for this clone.
    await rm(clone.path, { force: true });
    await this.executor.run(qemuImgCreateOverlay({ basePath: base.imagePath, baseFormat: base.format, clonePath: clone.path }));
  }

  protected async destroyClone(clone: CloneRecord): Promise<void> {
    for (const file of clone.files) await rm(file, { force: true });
  }

  protected async releaseBaseResources(): Promise<void> {
    // The base image is the operator's file; forgetting it is all there is.
  }

  /** A flatten cut short: done if the overlay no longer names a backing file, else still on its base. */
  protected override async reconcileFlattening(clone: CloneRecord): Promise<void> {
    const info = await this.executor.run(qemuImgInfo(clone.path, { format: 'qcow2' }));
    const detached = info.backingFile === undefined;
    await this.commit((s) => {
      s.clones[clone.workloadId].state = 'ready';
      if (detached) s.clones[clone.workloadId].baseId = undefined;
    });
    if (detached && clone.baseId) await this.releaseIfUnused(clone.baseId);
  }

  /**
   * Copies the base's data into the overlay (`qemu-img rebase -b ""`), so
   * the clone stands alone and no longer holds its base. Costs as much as
   * copying the disk; refused while a VM has it open.
   */
  flatten(workloadId: string): Promise<VolumeClone> {
    return this.lock.run(async () => {
      const clone = (await this.readState()).clones[workloadId];
      if (!clone) throw new NotFoundError(`no volume for workload ${workloadId}`, { field: 'workloadId' });
      if (clone.state !== 'ready') throw new FailedPreconditionError(`volume of ${workloadId} is ${clone.state}`, { field: 'workloadId' });
      if (clone.baseId === undefined) return viewOf(clone);
      await this.commit((s) => {
        s.clones[workloadId].state = 'flattening';
      });
      try {
        await this.executor.run(qemuImgFlatten(clone.path));
      } catch (err) {
        await this.commit((s) => {
          s.clones[workloadId].state = 'ready';
        });
        throw err;
      }
      const done = await this.commit((s) => {
        s.clones[workloadId].state = 'ready';
        s.clones[workloadId].baseId = undefined;
      });
      await this.releaseIfUnused(clone.baseId);
      this.logger.info('volume flattened', { workloadId, baseId: clone.baseId });
      return viewOf(done.clones[workloadId]);
    });
  }
}
