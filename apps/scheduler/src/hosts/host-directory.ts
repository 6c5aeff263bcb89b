import { hostStatusFromProto, type PlacementHost } from '@corral/domain';
import { createClient, type ChannelCredentials, type PromiseClient } from '@corral/grpc';
import { hostRegistryV1 } from '@corral/proto';

export interface DirectoryHost extends PlacementHost {
  agentAddress: string;
}

/** The scheduler's port onto fleet membership (owned by host-registry). */
export interface HostDirectory {
  list(teamId: string | null): Promise<DirectoryHost[]>;
  get(hostId: string): Promise<DirectoryHost>;
  close(): void;
}

function fromProto(host: hostRegistryV1.Host): DirectoryHost {
  return {
    id: host.id,
    name: host.name,
    status: hostStatusFromProto(host.status),
    teamId: host.teamId || null,
    drivers: host.drivers.map((d) => ({ name: d.name, healthy: d.healthy })),
    // A host that reported no capacity takes no workload that asks for resources.
    ...(host.capacity && (host.capacity.cpuMillis > 0 || host.capacity.memoryMb > 0)
      ? { capacity: { cpuMillis: host.capacity.cpuMillis, memoryMb: Number(host.capacity.memoryMb) } }
      : {}),
    labels: { ...host.labels },
    agentAddress: host.agentAddress,
  };
}

/** `credentials`: TLS to host-registry (its certificate from the internal CA); plaintext without. */
export function hostRegistryDirectory(address: string, deadlineMs = 5000, credentials?: ChannelCredentials): HostDirectory {
  const client: PromiseClient<hostRegistryV1.HostRegistryServiceClient> = createClient(hostRegistryV1.HostRegistryServiceClient, address, { deadlineMs, credentials });
  return {
    async list(teamId) {
      const res = await client.listHosts({ teamId: teamId ?? '' });
      return res.hosts.map(fromProto);
    },
    async get(hostId) {
      const res = await client.getHost({ id: hostId });
      if (!res.host) throw new Error(`host-registry answered without a host for ${hostId}`);
      return fromProto(res.host);
    },
    close: () => client.close(),
  };
}
