import { agentV1 } from '@corral/proto';
import { createClient, type PromiseClient } from '../client/client';
import { mutualTlsChannelCredentials, type TlsMaterial } from '../tls/mutual-tls';
import { isTlsMaterialSource, type TlsMaterialSource } from '../tls/reloading-tls-material';

export type AgentClient = PromiseClient<agentV1.NodeAgentServiceClient>;

/** Which agent to call: its host id is whom the agent's certificate must name, the address only where to dial. */
export interface AgentTarget {
  id: string;
  agentAddress: string;
}

export interface AgentChannelsOptions {
  deadlineMs: number;
  /**
   * The caller's control-plane certificate (AGENT_TLS_*): agents are called
   * over mutual TLS, and each must present a certificate naming the host the
   * call is for. Without it agents are called in plaintext. A source (files
   * reloaded when replaced, see agent-tls.ts) gives new channels the renewed
   * certificate without a restart.
   */
  tls?: TlsMaterial | TlsMaterialSource;
  /** How long a channel made with replaced material still serves calls under way before it is closed. Default 10 min. */
  retiredChannelGraceMs?: number;
}

const DEFAULT_RETIRED_CHANNEL_GRACE_MS = 600_000;

/**
 * One gRPC channel per agent, reused across calls, shared by every
 * control-plane service that calls agents (scheduler, reconciler). Keyed by
 * host id and address: the same address serving another host (an agent
 * replaced behind it) is another channel, checked against the other
 * identity. When the certificate is renewed the next call opens a new
 * channel; the old one is closed after a grace so calls under way (streams
 * included) finish.
 */
export class AgentChannels {
  private readonly clients = new Map<string, { address: string; client: AgentClient; material: TlsMaterial | undefined }>();
  private readonly retired = new Set<{ client: AgentClient; timer: ReturnType<typeof setTimeout> }>();

  constructor(protected readonly options: AgentChannelsOptions) {}

  get mutualTls(): boolean {
    return this.options.tls !== undefined;
  }

  get(target: AgentTarget): AgentClient {
    const { id, agentAddress } = target;
    const key = `${id}@${agentAddress}`;
    const material = this.currentMaterial();
    let entry = this.clients.get(key);
    if (entry && entry.material !== material) {
      this.retire(entry.client);
      entry = undefined;
    }
    if (!entry) {
      const credentials = material ? mutualTlsChannelCredentials(material, { kind: 'host', hostId: id }) : undefined;
      entry = { address: agentAddress, material, client: createClient(agentV1.NodeAgentServiceClient, agentAddress, { deadlineMs: this.options.deadlineMs, credentials }) };
      this.clients.set(key, entry);
    }
    return entry.client;
  }

  /** Drops the channels to an address, e.g. after its agent moved or its host was deleted. */
  evict(address: string): void {
    for (const [key, entry] of this.clients) {
      if (entry.address !== address) continue;
      entry.client.close();
      this.clients.delete(key);
    }
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
      }, this.options.retiredChannelGraceMs ?? DEFAULT_RETIRED_CHANNEL_GRACE_MS),
    };
    retired.timer.unref?.();
    this.retired.add(retired);
  }
}
