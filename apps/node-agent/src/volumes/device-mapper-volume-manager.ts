import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError } from '@corral/domain';
import {
  DEFAULT_CHUNK_SECTORS,
  DM_UUID_PREFIX,
  dmIdentity,
  dmsetupCreateSnapshot,
  dmsetupInfo,
  dmsetupRemove,
  isNotFound,
  losetupAttach,
  losetupDetach,
  losetupList,
  type LoopDevice,
} from './dm-commands';
import { RecordedVolumeManager, type BaseRecord, type ClonePlan, type CloneRecord, type VolumeManagerOptions } from './recorded-volume-manager';
import type { PrepareBaseOptions, ReconcileReport } from './volume-manager';

// Clones as device-mapper snapshots (the classic thin-clone layout, as in
// Firecracker-based platforms): the base image on a read-only loop device
// is the origin shared by all its clones; each workload gets a sparse
// copy-on-write file on its own loop device and a `snapshot` target over
// both, `/dev/mapper/corral-<workload>`, that qemu opens as a raw disk.
// Creating one costs two losetup calls and a dmsetup call at any image size.
//
// Tear-down runs in the reverse order of the dependencies:
//   dmsetup remove → losetup -d cow → delete cow file → drop the clone's
//   reference → (last reference) losetup -d origin.
// Loop devices are identified by the file behind them, never by a recorded
// number alone: a number may have been reused by someone else since.

export interface DeviceMapperVolumeManagerOptions extends VolumeManagerOptions {
  /** Copy-on-write chunk size in 512-byte sectors. Default 8 (4 KiB). */
  chunkSectors?: number;
  /** Where device-mapper nodes appear. Default /dev/mapper. */
  mapperDir?: string;
}

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]); // "QFI\xfb"

/**
 * Room for every chunk of the origin plus the exception-store metadata
 * (16 bytes per 4 KiB chunk, plus header areas). Sparse, so only what the
 * workload writes takes space.
 */
export function cowBytesFor(originBytes: number): number {
  const bytes = originBytes + Math.ceil(originBytes / 64) + 1024 * 1024;
  return Math.ceil(bytes / 4096) * 4096;
}

export class DeviceMapperVolumeManager extends RecordedVolumeManager {
  private readonly chunkSectors: number;
  private readonly mapperDir: string;

  constructor(options: DeviceMapperVolumeManagerOptions) {
    super('device-mapper', options);
    this.chunkSectors = options.chunkSectors ?? DEFAULT_CHUNK_SECTORS;
    this.mapperDir = options.mapperDir ?? '/dev/mapper';
  }

  protected async inspectImage(imagePath: string, options: PrepareBaseOptions) {
    const refuse = () => new InvalidArgumentError('device-mapper snapshots need a raw base image', { field: 'imagePath' });
    if (options.format === 'qcow2') throw refuse();
    const handle = await open(imagePath, 'r');
    try {
      const head = Buffer.alloc(4);
      const { bytesRead } = await handle.read(head, 0, 4, 0);
      if (bytesRead === 4 && head.equals(QCOW2_MAGIC)) throw refuse();
      const { size } = await handle.stat();
      // A loop device ends at the last whole sector.
      const sectors = Math.floor(size / 512);
      if (sectors === 0) throw new InvalidArgumentError('base image is smaller than one sector', { field: 'imagePath' });
      return { format: 'raw' as const, virtualBytes: sectors * 512 };
    } finally {
      await handle.close();
    }
  }

  protected planClone(_base: BaseRecord, workloadId: string): ClonePlan {
    const { name, uuid } = dmIdentity(workloadId);
    const cow = join(this.filesDir, `${workloadId}.cow`);
    return { path: join(this.mapperDir, name), format: 'raw', files: [cow], dm: { name, uuid } };
  }

  protected async createClone(base: BaseRecord, clone: CloneRecord): Promise<void> {
    const dm = requireDm(clone);
    const cow = clone.files[0];
    const origin = await this.ensureOrigin(base);
    await rm(cow, { force: true });
    await createSparseFile(cow, cowBytesFor(base.virtualBytes));
    const cowDevice = await this.executor.run(losetupAttach(cow, { readOnly: false }));
    await this.commit((s) => {
      (s.clones[clone.workloadId].dm as NonNullable<CloneRecord['dm']>).cowDevice = cowDevice;
    });
    await this.executor.run(
      dmsetupCreateSnapshot({ name: dm.name, uuid: dm.uuid, originDevice: origin, cowDevice, sectors: base.virtualBytes / 512, chunkSectors: this.chunkSectors }),
    );
  }

  protected async destroyClone(clone: CloneRecord): Promise<void> {
    const dm = requireDm(clone);
    const cow = clone.files[0];
    await ignoreNotFound(this.executor.run(dmsetupRemove(dm.name)));
    for (const loop of await this.loopsBackedBy(cow)) await ignoreNotFound(this.executor.run(losetupDetach(loop.name)));
    await rm(cow, { force: true });
  }

  protected async releaseBaseResources(base: BaseRecord): Promise<void> {
    if (!base.originDevice) return;
    const loops = await this.executor.run(losetupList());
    const origin = loops.find((l) => l.name === base.originDevice && l.backFile === base.imagePath);
    if (origin) await ignoreNotFound(this.executor.run(losetupDetach(origin.name)));
    await this.commit((s) => {
      if (s.bases[base.baseId]) delete s.bases[base.baseId].originDevice;
    });
  }

  /** A clone whose files survived but whose devices did not (a reboot): assembled again; its data is in the persistent COW. */
  protected override async reconcileReady(clone: CloneRecord, report: ReconcileReport): Promise<void> {
    const dm = requireDm(clone);
    const devices = await this.executor.run(dmsetupInfo());
    if (devices.some((d) => d.name === dm.name)) return;
    const base = clone.baseId ? (await this.readState()).bases[clone.baseId] : undefined;
    if (!base) throw new Error(`clone ${clone.workloadId} lost its device and its base record`);
    const origin = await this.ensureOrigin(base);
    const cow = clone.files[0];
    const cowDevice = (await this.loopsBackedBy(cow))[0]?.name ?? (await this.executor.run(losetupAttach(cow, { readOnly: false })));
    await this.commit((s) => {
      (s.clones[clone.workloadId].dm as NonNullable<CloneRecord['dm']>).cowDevice = cowDevice;
    });
    await this.executor.run(dmsetupCreateSnapshot({ name: dm.name, uuid: dm.uuid, originDevice: origin, cowDevice, sectors: base.virtualBytes / 512, chunkSectors: this.chunkSectors }));
    report.revived.push(clone.workloadId);
  }

  /** Corral's snapshot devices and loop devices that no record owns: left by a crash between creating them and recording them. */
  protected override async reconcileHost(report: ReconcileReport): Promise<void> {
    const state = await this.readState();
    const clones = Object.values(state.clones);
    const names = new Set(clones.map((c) => c.dm?.name));
    for (const device of await this.executor.run(dmsetupInfo())) {
      if (!device.uuid.startsWith(DM_UUID_PREFIX) || names.has(device.name)) continue;
      await ignoreNotFound(this.executor.run(dmsetupRemove(device.name)));
      report.orphans.push(`dm:${device.name}`);
    }
    const ownedFiles = new Set(clones.flatMap((c) => c.files));
    const origins = new Map(Object.values(state.bases).map((b) => [b.imagePath, b.originDevice]));
    for (const loop of await this.executor.run(losetupList())) {
      if (!loop.backFile) continue;
      const strayCow = loop.backFile.startsWith(`${this.filesDir}/`) && !ownedFiles.has(loop.backFile);
      const strayOrigin = loop.readOnly && origins.has(loop.backFile) && origins.get(loop.backFile) !== loop.name;
      if (!strayCow && !strayOrigin) continue;
      await ignoreNotFound(this.executor.run(losetupDetach(loop.name)));
      report.orphans.push(loop.name);
    }
  }

  /** The base's read-only origin loop device, attached on first use. */
  private async ensureOrigin(base: BaseRecord): Promise<string> {
    const recorded = (await this.readState()).bases[base.baseId]?.originDevice;
    if (recorded) {
      const loops = await this.executor.run(losetupList());
      if (loops.some((l) => l.name === recorded && l.backFile === base.imagePath && l.readOnly)) return recorded;
    }
    const device = await this.executor.run(losetupAttach(base.imagePath, { readOnly: true }));
    await this.commit((s) => {
      s.bases[base.baseId].originDevice = device;
    });
    return device;
  }

  private async loopsBackedBy(file: string): Promise<LoopDevice[]> {
    return (await this.executor.run(losetupList())).filter((l) => l.backFile === file);
  }
}

function requireDm(clone: CloneRecord): NonNullable<CloneRecord['dm']> {
  if (!clone.dm) throw new Error(`clone ${clone.workloadId} has no device-mapper record`);
  return clone.dm;
}

async function ignoreNotFound(run: Promise<void>): Promise<void> {
  try {
    await run;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

async function createSparseFile(path: string, bytes: number): Promise<void> {
  const handle = await open(path, 'wx', 0o600);
  try {
    await handle.truncate(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
