import { AgentChannels, type AgentChannelsOptions, type AgentClient } from '@corral/grpc';

export type { AgentClient };

/** The reconciler's control-plane certificate (AGENT_TLS_*, loadAgentTlsMaterial in @corral/grpc) and call deadline; see AgentChannelsOptions. */
export type AgentClientsOptions = AgentChannelsOptions;

/**
 * One channel per agent (host id + address), the same channels the
 * scheduler keeps (AgentChannels in @corral/grpc): with the reconciler's
 * control-plane certificate each agent must prove it is the host the call
 * is for; a renewed certificate is taken for the next call's channel and
 * the old one is closed after a grace so calls under way finish.
 */
export class AgentClients extends AgentChannels {}
