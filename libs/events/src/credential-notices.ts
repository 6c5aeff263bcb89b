// When host-registry drops a heartbeat, or the scheduler a state event,
// because the host token it carries is expired, invalid or revoked, the
// agent would otherwise learn nothing until its next scheduled refresh
// (minutes of silence, the host going unreachable). So the refusing service
// tells that host's agent on `corral.hosts.<hostId>.notices` and the agent
// refreshes at once. Shared by both refusing services.
//
// A notice goes only to a host the control plane knows (not deleted): a
// deleted host's refresh would be refused anyway. It is rate-limited per
// host, since an agent heartbeating every second with a bad token would
// otherwise get a notice per beat; the agent rate-limits what it acts on
// as well, so several replicas each sending one cost one refresh.

import { eventsV1 } from '@corral/proto';
import { errorText } from './dispatch';
import type { BusLogger, EventBus } from './event-bus';
import { isValidSubjectToken } from './subjects';
import { Topics } from './topics';

export type RefusedMessageKind = 'heartbeat' | 'workload-state';

export interface CredentialRefusalNotifierOptions {
  bus: Pick<EventBus, 'publish'>;
  /** Who refuses, e.g. `host-registry`: carried in the notice. */
  refusedBy: string;
  /** True for a host that exists and is not deleted; a throw counts as unknown (no notice). */
  isKnownHost: (hostId: string) => Promise<boolean>;
  logger: BusLogger;
  /** Least time between two notices to one host. Default 30 s. */
  minIntervalMs?: number;
  /** Most hosts remembered for the rate limit. Default 50,000. */
  maxHosts?: number;
  now?: () => Date;
}

const KIND: Record<RefusedMessageKind, eventsV1.RefusedMessageKind> = {
  heartbeat: eventsV1.RefusedMessageKind.REFUSED_MESSAGE_KIND_HEARTBEAT,
  'workload-state': eventsV1.RefusedMessageKind.REFUSED_MESSAGE_KIND_WORKLOAD_STATE,
};

export class CredentialRefusalNotifier {
  private readonly lastNotice = new Map<string, number>();
  private readonly minIntervalMs: number;
  private readonly maxHosts: number;
  private readonly now: () => Date;
  /** Notices published so far. */
  sent = 0;

  constructor(private readonly options: CredentialRefusalNotifierOptions) {
    this.minIntervalMs = options.minIntervalMs ?? 30_000;
    this.maxHosts = options.maxHosts ?? 50_000;
    this.now = options.now ?? (() => new Date());
  }

  /**
   * Tells `hostId`'s agent that a message of `kind` claiming to be from it
   * was refused for its token. Never throws; resolves true when a notice
   * was published.
   */
  async refused(hostId: string, kind: RefusedMessageKind): Promise<boolean> {
    if (!isValidSubjectToken(hostId)) return false;
    const at = this.now();
    const last = this.lastNotice.get(hostId);
    if (last !== undefined && at.getTime() - last < this.minIntervalMs) return false;
    // Claimed before the lookup, so a burst of refusals asks the database once.
    this.remember(hostId, at.getTime());
    const known = await this.options.isKnownHost(hostId).catch(() => false);
    if (!known) return false;
    try {
      this.options.bus.publish(Topics.credentialRefused, hostId, { hostId, refusedBy: this.options.refusedBy, messageKind: KIND[kind], at });
      this.sent++;
      return true;
    } catch (err) {
      this.options.logger.warn('could not tell a host its credentials were refused', { hostId, error: errorText(err) });
      return false;
    }
  }

  private remember(hostId: string, atMs: number): void {
    this.lastNotice.delete(hostId);
    this.lastNotice.set(hostId, atMs);
    while (this.lastNotice.size > this.maxHosts) {
      const oldest = this.lastNotice.keys().next().value;
      if (oldest === undefined) break;
      this.lastNotice.delete(oldest);
    }
  }
}
