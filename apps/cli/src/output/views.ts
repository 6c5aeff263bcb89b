import { hostStatusFromProto, instanceStateFromProto } from '@corral/domain';
import type { HostStatus, InstanceState, hostRegistryV1, schedulerV1 } from '@corral/proto';

// What `--output json` prints: the same shapes as the REST API (lowercase
// states, null for "not set"), so scripts can move between the two.

const orNull = (value: string) => (value === '' ? null : value);
const isoOrNull = (value: Date | undefined) => (value ? value.toISOString() : null);

function stateName(state: InstanceState): string {
  try {
    return instanceStateFromProto(state);
  } catch {
    return 'unknown';
  }
}

function statusName(status: HostStatus): string {
  try {
    return hostStatusFromProto(status);
  } catch {
    return 'unknown';
  }
}

export function workloadView(w: schedulerV1.Workload) {
  return {
    id: w.id,
    name: w.name,
    teamId: orNull(w.teamId),
    driver: w.driver,
    command: w.command,
    envKeys: w.envKeys,
    state: stateName(w.state),
    hostId: orNull(w.hostId),
    exitCode: w.exited ? w.exitCode : null,
    reason: orNull(w.reason),
    createdAt: isoOrNull(w.createdAt),
    updatedAt: isoOrNull(w.updatedAt),
    image: orNull(w.image),
    resources: { vcpus: w.resources?.vcpus || null, memoryMb: w.resources?.memoryMb || null },
    routes: w.routes.map((r) => ({ name: r.name, port: r.port, protocol: r.protocol || 'tcp' })),
    ports: w.ports.map((p) => ({ name: p.name, guestPort: p.guestPort, hostPort: p.hostPort, protocol: p.protocol })),
    vm: w.vm && w.vm.mode
      ? { mode: w.vm.mode, kernel: orNull(w.vm.kernel), initrd: orNull(w.vm.initrd), kernelArgs: orNull(w.vm.kernelArgs), rootDisk: orNull(w.vm.rootDisk) }
      : null,
  };
}
export type WorkloadView = ReturnType<typeof workloadView>;

export function hostView(h: hostRegistryV1.Host) {
  const resources = (r: { cpuMillis: number; memoryMb: number; diskMb: number } | undefined) => ({
    cpuMillis: r?.cpuMillis ?? 0,
    memoryMb: r?.memoryMb ?? 0,
    diskMb: r?.diskMb ?? 0,
  });
  return {
    id: h.id,
    name: h.name,
    status: statusName(h.status),
    teamId: orNull(h.teamId),
    resources: { capacity: resources(h.capacity), usage: resources(h.usage) },
    drivers: h.drivers.map((d) => ({ name: d.name, healthy: d.healthy, version: d.version })),
    labels: h.labels,
    lastHeartbeatAt: isoOrNull(h.lastHeartbeatAt),
    createdAt: isoOrNull(h.createdAt),
  };
}
export type HostView = ReturnType<typeof hostView>;
