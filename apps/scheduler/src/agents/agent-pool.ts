import { FailedPreconditionError } from '@corral/domain';
import { createClient, isTlsMaterialSource, mutualTlsChannelCredentials, type PromiseClient, type TlsMaterial, type TlsMaterialSource } from '@corral/grpc';
import { agentV1 } from '@corral/proto';

export type AgentClient = PromiseClient<agentV1.NodeAgentServiceClient>;

/** Which agent to call: its host id is whom the agent's certificate must name, the address only where to dial. */
export interface AgentTarget {
  id: string;
  agentAddress: string;
}

export interface AgentPoolOptions {
  deadlineMs: number;
  /**
   * The scheduler's control-plane certificate (AGENT_TLS_*): agents are
   * called over mutual TLS, and each must present a certificate naming the
   * host the call is for. Without it agents are called in plaintext. A
   * source (files reloaded when replaced) gives new channels the renewed
   * certificate without a restart.
   */
  tls?: TlsMaterial | TlsMaterialSource;
  /** How long a channel made with replaced material still serves calls under way before it is closed. Default 10 min. */
  retiredChannelGraceMs?: number;
}

/**
 * One gRPC channel per agent, reused across calls. Keyed by host id and
 * address: the same address serving another host (an agent replaced behind
 * it) is another channel, checked against the other identity.
 */
export class AgentPool {
  private readonly clients = new Map<string, { address: string; client: AgentClient; material: TlsMaterial | undefined }>();
  private readonly retired = new Set<{ client: AgentClient; timer: ReturnType<typeof setTimeout> }>();
  private readonly options: AgentPoolOptions;

  constructor(options: AgentPoolOptions | number) {
    this.options = typeof options === 'number' ? { deadlineMs: options } : options;
  }

  get mutualTls(): boolean {
    return this.options.tls !== undefined;
  }

  /** The host (from the host directory), not only its address: with TLS the agent must prove it is that host. */
  get(target: AgentTarget): AgentClient {
    const { id, agentAddress } = target;
    if (this.options.tls && !id) throw new FailedPreconditionError(`calling the agent at ${agentAddress} over mutual TLS needs the host id it must prove`);
    const key = `${id}@${agentAddress}`;
    const material = this.currentMaterial();
    let entry = this.clients.get(key);
    if (entry && entry.material !== material) {
      // Renewed certificate: new calls go over a new channel; the old one
      // finishes what it carries (streams included) before it is closed.
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
}
