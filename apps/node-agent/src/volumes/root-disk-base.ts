import type { WorkloadSpec } from '../workloads/workload-record';

// Which image a workload's root disk is cloned from, whatever the qemu mode:
// a microVM names its base in vm.rootDisk (optional: it may boot from its
// initramfs alone); a unikernel boots its image, so the image is the base.
// Either way the volume manager the host's capabilities selected
// (device-mapper or qcow2) makes the workload's own copy-on-write clone, and
// the driver boots that clone: the shared image is never written.

/** The base image to clone for the workload's root disk; undefined when it boots without one. */
export function rootDiskBaseOf(spec: Pick<WorkloadSpec, 'image' | 'vm'>): string | undefined {
  if (spec.vm?.mode === 'unikernel') return spec.image;
  return spec.vm?.rootDisk;
}
