import { createClient, isTlsMaterialSource, mutualTlsChannelCredentials, type PromiseClient, type TlsMaterial, type TlsMaterialSource } from '@corral/grpc';
import { agentV1 } from '@corral/proto';

export type AgentClient = PromiseClient<agentV1.NodeAgentServiceClient>;

export interface AgentClientsOptions {
  deadlineMs: number;
  /**
   * The reconciler's control-plane certificate (AGENT_TLS_*). A source
   * (files reloaded when replaced, see agent-tls.ts) gives new channels the
   * renewed certificate without a restart; without it agents are called in
   * plaintext.
   */
  tls?: TlsMaterial | TlsMaterialSource;
  /** How long a channel made with replaced material still serves calls under way before it is closed. Default 10 min. */
  retiredChannelGraceMs?: number;
}

/**
 * One channel per agent (host id + address), like the scheduler's pool:
 * with the reconciler's control-plane certificate each agent must prove it
 * is the host the call is for. When the certificate is renewed the next
 * call opens a new channel; the old one is closed after a grace so calls
 * under way finish.
 */
export class AgentClients {
  private readonly clients = new Map<string, { client: AgentClient; material: TlsMaterial | undefined }>();
  private readonly retired = new Set<{ client: AgentClient; timer: ReturnType<typeof setTimeout> }>();

  constructor(private readonly options: AgentClientsOptions) {}

  get(host: { id: string; agentAddress: string }): AgentClient {
    const key = `${host.id}@${host.agentAddress}`;
    const material = this.currentMaterial();
    let entry = this.clients.get(key);
    if (entry && entry.material !== material) {
      this.retire(entry.client);
      entry = undefined;
    }
    if (!entry) {
      const credentials = material ? mutualTlsChannelCredentials(material, { kind: 'host', hostId: host.id }) : undefined;
      entry = { material, client: createClient(agentV1.NodeAgentServiceClient, host.agentAddress, { deadlineMs: this.options.deadlineMs, credentials }) };
      this.clients.set(key, entry);
    }
    return entry.client;
  }

  private currentMaterial(): TlsMaterial | undefined {
    const tls = this.options.tls;
    if (!tls) return undefined;
    return isTlsMaterialSource(tls) ? tls.current() : tls;
  }

  private retire(client: AgentClient): void {
    const retired = {
      client,
      timer: setTimeout(() => {
        this.retired.delete(retired);
        client.close();
      }, this.options.retiredChannelGraceMs ?? 600_000),
    };
    retired.timer.unref?.();
    this.retired.add(retired);
  }

  closeAll(): void {
    for (const entry of this.clients.values()) entry.client.close();
    this.clients.clear();
    for (const retired of this.retired) {
      clearTimeout(retired.timer);
      retired.client.close();
    }
    this.retired.clear();
  }
}
