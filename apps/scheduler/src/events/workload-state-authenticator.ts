import { HostTokenGate, type AuthenticateHostToken } from '@corral/auth';
import type { Logger } from '@corral/logging';
import type { eventsV1 } from '@corral/proto';

// WorkloadStateChanged events come from node agents over the bus, and the
// scheduler turns them into the workload's recorded state. Any bus client
// could publish one, so an event is applied only when it carries a valid
// host JWT (`host_token`) for the host it claims to come from, and that host
// is the one the workload was placed on: a host can report only its own
// workloads. Tokens are checked through host-registry's published keys
// (`JwksHostTokenVerifier`) and each answer is kept for a while (`HostTokenGate`),
// as host-registry does for heartbeats.

export interface WorkloadStateAuthenticatorOptions {
  /** Checks a host token (signature, issuer, audience, expiry). */
  authenticate: AuthenticateHostToken;
  /** The host the workload is recorded on; undefined for an unknown workload or one on no host. */
  placedOn: (workloadId: string) => Promise<string | undefined>;
  logger: Logger;
  recheckMs?: number;
  now?: () => Date;
}

export class WorkloadStateAuthenticator {
  private readonly gate: HostTokenGate;

  constructor(private readonly options: WorkloadStateAuthenticatorOptions) {
    this.gate = new HostTokenGate({
      authenticate: options.authenticate,
      logger: options.logger,
      droppedMessage: 'workload state event dropped',
      recheckMs: options.recheckMs,
      now: options.now,
    });
  }

  /** Events refused so far. */
  get refused(): number {
    return this.gate.refused;
  }

  /**
   * True when the event may be applied. Rejects when the check could not
   * run (host-registry or the database unreachable): the caller drops the
   * event, the agent's next report or heartbeat carries the state again.
   */
  async accept(event: eventsV1.WorkloadStateChanged): Promise<boolean> {
    return (await this.check(event)) === 'accepted';
  }

  /**
   * As accept, telling why an event is refused: `token-refused` (no, an
   * expired or an invalid host token: the host's agent is worth telling)
   * or `misplaced` (a valid token, but not for the workload's host).
   */
  async check(event: eventsV1.WorkloadStateChanged): Promise<'accepted' | 'token-refused' | 'misplaced'> {
    if (!(await this.gate.admit(event.hostToken, event.hostId))) return 'token-refused';
    const placedOn = await this.options.placedOn(event.workloadId);
    if (placedOn !== event.hostId) {
      this.gate.refuse(event.hostId, placedOn === undefined ? 'the workload is not placed on any host' : 'the workload lives on another host', {
        workloadId: event.workloadId.slice(0, 64),
      });
      return 'misplaced';
    }
    return 'accepted';
  }
}
