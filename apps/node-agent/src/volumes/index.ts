export type {
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
export type { VolumeManagerOptions } from './recorded-volume-manager';
export { Qcow2VolumeManager } from './qcow2-volume-manager';
export { DeviceMapperVolumeManager, cowBytesFor } from './device-mapper-volume-manager';
export type { DeviceMapperVolumeManagerOptions } from './device-mapper-volume-manager';
export { DM_CONTROL_PATH, checkDeviceMapperControl, detectVolumeCapability, selectVolumeManager } from './select-volume-manager';
export type { CapabilityProbe, SelectVolumeManagerOptions, VolumeCapability, VolumeManagerSelection } from './select-volume-manager';
export { QEMU_IMG, parseQemuImgInfo, qemuImgCreateOverlay, qemuImgFlatten, qemuImgInfo } from './qemu-img';
export type { QemuImgInfo } from './qemu-img';
