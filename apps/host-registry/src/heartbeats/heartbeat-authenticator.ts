import { HostTokenGate, type AuthenticateHostToken, type HostTokenCheck } from '@corral/auth';
import type { Logger } from '@corral/logging';
import type { eventsV1 } from '@corral/proto';

// Heartbeats are the agents' main channel to the control plane, so each one
// must carry the host's JWT and speak only for the host the token names.
// The per-token cache (one check per host per `recheckMs`, refusals kept so
// forgeries cannot become a database storm) is `HostTokenGate` in
// @corral/auth, shared with the scheduler's check of state-change events.

export type { AuthenticateHostToken, HostTokenCheck };

export interface HeartbeatAuthenticatorOptions {
  authenticate: AuthenticateHostToken;
  logger: Logger;
  /** How long an answer for a token is trusted before it is checked again (revocations take effect within this). */
  recheckMs?: number;
  /** Most tokens remembered; the oldest answers are dropped beyond it. */
  maxEntries?: number;
  now?: () => Date;
}

export class HeartbeatAuthenticator {
  private readonly gate: HostTokenGate;

  constructor(options: HeartbeatAuthenticatorOptions) {
    this.gate = new HostTokenGate({ ...options, droppedMessage: 'heartbeat dropped' });
  }

  get refused(): number {
    return this.gate.refused;
  }

  /** True when `heartbeat` carries a valid, unrevoked host token for the host it claims to be. */
  accept(heartbeat: eventsV1.HostHeartbeat): Promise<boolean> {
    return this.gate.admit(heartbeat.hostToken, heartbeat.hostId);
  }
}
