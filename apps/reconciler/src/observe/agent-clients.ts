import { createClient, mutualTlsChannelCredentials, type PromiseClient, type TlsMaterial } from '@corral/grpc';
import { agentV1 } from '@corral/proto';

export type AgentClient = PromiseClient<agentV1.NodeAgentServiceClient>;

/**
 * One channel per agent (host id + address), like the scheduler's pool:
 * with the reconciler's control-plane certificate each agent must prove it
 * is the host the call is for.
 */
export class AgentClients {
  private readonly clients = new Map<string, AgentClient>();

  constructor(private readonly options: { deadlineMs: number; tls?: TlsMaterial }) {}

  get(host: { id: string; agentAddress: string }): AgentClient {
    const key = `${host.id}@${host.agentAddress}`;
    let client = this.clients.get(key);
    if (!client) {
      const credentials = this.options.tls ? mutualTlsChannelCredentials(this.options.tls, { kind: 'host', hostId: host.id }) : undefined;
      client = createClient(agentV1.NodeAgentServiceClient, host.agentAddress, { deadlineMs: this.options.deadlineMs, credentials });
      this.clients.set(key, client);
    }
    return client;
  }

  closeAll(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
