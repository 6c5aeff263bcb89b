// Root disks for VM workloads: a read-only base image shared by many
// workloads, and per workload a copy-on-write clone whose creation costs the
// same whatever the image size (DESIGN §3). Two implementations: qcow2
// backing-file overlays, and device-mapper snapshots where the kernel has
// device-mapper. `selectVolumeManager` picks one at start-up.

export type DiskFormat = 'raw' | 'qcow2';
export type VolumeManagerKind = 'qcow2' | 'device-mapper';

export interface PrepareBaseOptions {
  /** Skip format detection (qemu-img probing) and trust this. */
  format?: DiskFormat;
}

/** A workload's root disk, as a driver hands it to qemu. */
export interface VolumeClone {
  workloadId: string;
  /** The base it reads through to; undefined once flattened. */
  baseId: string | undefined;
  /** A qcow2 file, or a /dev/mapper block device. */
  path: string;
  /** How qemu must open `path` (`-drive format=…`). */
  format: DiskFormat;
  /** The size of the disk as the guest sees it. */
  virtualBytes: number;
}

export interface VolumeUsage {
  /** The disk's size as the workload sees it (the base image's virtual size). */
  apparentBytes: number;
  /**
   * Host storage the clone itself takes: the allocated blocks
   * (`stat.blocks * 512`) of the files it owns, not their apparent size.
   * The shared base is not counted.
   */
  allocatedBytes: number;
}

export interface BaseInfo {
  baseId: string;
  imagePath: string;
  format: DiskFormat;
  virtualBytes: number;
  /** Clones that read through to it. */
  refs: number;
}

export type CloneState = 'creating' | 'ready' | 'flattening' | 'removing';

export interface CloneInfo extends VolumeClone {
  state: CloneState;
  /** Host files the clone owns (deleted on remove). */
  files: string[];
}

export interface VolumeInventory {
  kind: VolumeManagerKind;
  bases: BaseInfo[];
  clones: CloneInfo[];
}

/** What `reconcile` found and cleaned up after a crash or an unclean stop. */
export interface ReconcileReport {
  /** Clones whose creation or removal was interrupted: rolled back / finished. */
  interrupted: string[];
  /** Records whose files had vanished: dropped. */
  recordsWithoutFiles: string[];
  /** Files (and, for device-mapper, devices) no record owns: deleted. */
  orphans: string[];
  /** Bases no clone uses any more: released. */
  releasedBases: string[];
  /** Device-mapper clones whose devices were gone (e.g. after a reboot) and were assembled again from their files. */
  revived: string[];
}

export interface VolumeManager {
  readonly kind: VolumeManagerKind;
  /**
   * Loads the persisted state and repairs it against the host: run once at
   * agent start, before anything else. Other methods load the state lazily
   * but do not repair.
   */
  reconcile(): Promise<ReconcileReport>;
  /**
   * Registers `imagePath` as a read-only base and returns its id, the same
   * for the same unchanged file. The file must not change while clones use
   * it; a clone of a base whose file changed is refused. A base is released
   * when its last clone is removed (or by `releaseBase`, or at `reconcile`
   * when no clone uses it): prefer `cloneImage` when other workloads may be
   * removed concurrently.
   */
  prepareBase(imagePath: string, options?: PrepareBaseOptions): Promise<string>;
  /**
   * A copy-on-write clone of the base for the workload. Idempotent: the
   * same clone again for the same workload and base; a different base is a
   * FailedPreconditionError (remove first).
   */
  clone(baseId: string, workloadId: string): Promise<VolumeClone>;
  /** `prepareBase` then `clone` as one step, so the base cannot be released in between. */
  cloneImage(imagePath: string, workloadId: string, options?: PrepareBaseOptions): Promise<VolumeClone>;
  /** The workload's clone, undefined when it has none. */
  get(workloadId: string): Promise<VolumeClone | undefined>;
  usage(workloadId: string): Promise<VolumeUsage>;
  /**
   * Copies the base's data into the clone so it no longer needs the base
   * (e.g. before moving it to another host). Its cost is proportional to the
   * disk size. Not every implementation has it.
   */
  flatten?(workloadId: string): Promise<VolumeClone>;
  /** Deletes the workload's clone, then drops its reference to the base. Idempotent. */
  remove(workloadId: string): Promise<void>;
  /** Releases a base no clone uses. FailedPrecondition while clones use it; nothing when unknown. */
  releaseBase(baseId: string): Promise<void>;
  /** Everything recorded, for leak checks against the workload records. */
  list(): Promise<VolumeInventory>;
}
