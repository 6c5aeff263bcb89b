import { FailedPreconditionError } from '@corral/domain';
import { AgentChannels, type AgentChannelsOptions, type AgentClient, type AgentTarget } from '@corral/grpc';

export type { AgentClient, AgentTarget };

/** The scheduler's control-plane certificate (AGENT_TLS_*) and call deadline; see AgentChannelsOptions. */
export type AgentPoolOptions = AgentChannelsOptions;

/**
 * The scheduler's channels to agents (AgentChannels in @corral/grpc, shared
 * with the reconciler): one per host id and address, renewed certificates
 * taken for new channels, old ones closed after a grace.
 */
export class AgentPool extends AgentChannels {
  constructor(options: AgentPoolOptions | number) {
    super(typeof options === 'number' ? { deadlineMs: options } : options);
  }

  /** The host (from the host directory), not only its address: with TLS the agent must prove it is that host. */
  override get(target: AgentTarget): AgentClient {
    if (this.options.tls && !target.id) throw new FailedPreconditionError(`calling the agent at ${target.agentAddress} over mutual TLS needs the host id it must prove`);
    return super.get(target);
  }
}
