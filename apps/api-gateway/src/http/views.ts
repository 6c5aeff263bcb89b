import { hostStatusFromProto, instanceStateFromProto } from '@corral/domain';
import type { HostStatus, InstanceState, commonV1, hostRegistryV1, schedulerV1 } from '@corral/proto';

// The JSON form of Corral's resources over REST: lowercase states, null for
// "not set", ISO timestamps. Built field by field so nothing the backends add
// later (least of all env values) reaches a client unless listed here.

export interface WorkloadView {
  id: string;
  name: string;
  teamId: string | null;
  driver: string;
  command: string[];
  envKeys: string[];
  state: string;
  hostId: string | null;
  exitCode: number | null;
  reason: string | null;
  createdAt: string | null;
  updatedAt: string | null;
  image: string | null;
  resources: { vcpus: number | null; memoryMb: number | null };
  routes: { name: string; port: number; protocol: string }[];
  ports: PortView[];
  vm: { mode: string; kernel: string | null; initrd: string | null; kernelArgs: string | null; rootDisk: string | null } | null;
}

export interface PortView {
  name: string;
  guestPort: number;
  hostPort: number;
  protocol: string;
}

export interface ResourcesView {
  cpuMillis: number;
  memoryMb: number;
  diskMb: number;
}

export interface HostView {
  id: string;
  name: string;
  status: string;
  teamId: string | null;
  resources: { capacity: ResourcesView; usage: ResourcesView };
  drivers: { name: string; healthy: boolean; version: string }[];
  labels: Record<string, string>;
  lastHeartbeatAt: string | null;
  createdAt: string | null;
}

/** Shown for a state a newer backend sends that this gateway does not know. */
export const UNKNOWN_STATE = 'unknown';

const orNull = (value: string) => (value === '' ? null : value);
const isoOrNull = (value: Date | undefined) => (value ? value.toISOString() : null);
const positiveOrNull = (value: number | undefined) => (value ? value : null);

function stateName(state: InstanceState): string {
  try {
    return instanceStateFromProto(state);
  } catch {
    return UNKNOWN_STATE;
  }
}

function statusName(status: HostStatus): string {
  try {
    return hostStatusFromProto(status);
  } catch {
    return UNKNOWN_STATE;
  }
}

export function workloadView(w: schedulerV1.Workload): WorkloadView {
  return {
    id: w.id,
    name: w.name,
    teamId: orNull(w.teamId),
    driver: w.driver,
    command: [...w.command],
    envKeys: [...w.envKeys],
    state: stateName(w.state),
    hostId: orNull(w.hostId),
    exitCode: w.exited ? w.exitCode : null,
    reason: orNull(w.reason),
    createdAt: isoOrNull(w.createdAt),
    updatedAt: isoOrNull(w.updatedAt),
    image: orNull(w.image),
    resources: { vcpus: positiveOrNull(w.resources?.vcpus), memoryMb: positiveOrNull(w.resources?.memoryMb) },
    routes: w.routes.map((r) => ({ name: r.name, port: r.port, protocol: r.protocol || 'tcp' })),
    ports: w.ports.map((p) => ({ name: p.name, guestPort: p.guestPort, hostPort: p.hostPort, protocol: p.protocol })),
    vm: w.vm && w.vm.mode
      ? { mode: w.vm.mode, kernel: orNull(w.vm.kernel), initrd: orNull(w.vm.initrd), kernelArgs: orNull(w.vm.kernelArgs), rootDisk: orNull(w.vm.rootDisk) }
      : null,
  };
}

function resourcesView(r: commonV1.Resources | undefined): ResourcesView {
  return { cpuMillis: r?.cpuMillis ?? 0, memoryMb: r?.memoryMb ?? 0, diskMb: r?.diskMb ?? 0 };
}

export function hostView(h: hostRegistryV1.Host): HostView {
  return {
    id: h.id,
    name: h.name,
    status: statusName(h.status),
    teamId: orNull(h.teamId),
    resources: { capacity: resourcesView(h.capacity), usage: resourcesView(h.usage) },
    drivers: h.drivers.map((d) => ({ name: d.name, healthy: d.healthy, version: d.version })),
    labels: { ...h.labels },
    lastHeartbeatAt: isoOrNull(h.lastHeartbeatAt),
    createdAt: isoOrNull(h.createdAt),
  };
}
