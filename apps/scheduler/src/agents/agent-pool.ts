import { createClient, type PromiseClient } from '@corral/grpc';
import { agentV1 } from '@corral/proto';

export type AgentClient = PromiseClient<agentV1.NodeAgentServiceClient>;

/** One gRPC channel per agent address, reused across calls. */
export class AgentPool {
  private readonly clients = new Map<string, AgentClient>();

  constructor(private readonly deadlineMs: number) {}

  get(address: string): AgentClient {
    let client = this.clients.get(address);
    if (!client) {
      client = createClient(agentV1.NodeAgentServiceClient, address, { deadlineMs: this.deadlineMs });
      this.clients.set(address, client);
    }
    return client;
  }

  /** Drops a host's channel, e.g. after its agent moved to another address. */
  evict(address: string): void {
    this.clients.get(address)?.close();
    this.clients.delete(address);
  }

  closeAll(): void {
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
