import { createClient, type ChannelCredentials } from '@corral/grpc';
import { hostRegistryV1 } from '@corral/proto';
import type { RegisterHost } from '../identity/identity';
import type { RefreshHostCredentials } from './credential-refresher';

// The agent's two calls to host-registry, each on a channel of its own (they
// are rare: once at registration, then every ~2/3 of the JWT lifetime), over
// TLS when the agent trusts the control-plane CA (control-plane-trust.ts).

export function registryClient(address: string, credentials: ChannelCredentials | undefined): RegisterHost {
  return async (request) => {
    const client = createClient(hostRegistryV1.HostRegistryServiceClient, address, { deadlineMs: 10_000, credentials });
    try {
      return await client.registerHost(request);
    } finally {
      client.close();
    }
  };
}

export function refreshClient(address: string, credentials: ChannelCredentials | undefined): RefreshHostCredentials {
  return async (request) => {
    const client = createClient(hostRegistryV1.HostRegistryServiceClient, address, { deadlineMs: 10_000, credentials });
    try {
      return await client.refreshHostCredentials(request);
    } finally {
      client.close();
    }
  };
}
