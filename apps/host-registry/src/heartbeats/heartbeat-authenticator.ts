import type { Logger } from '@corral/logging';
import type { eventsV1 } from '@corral/proto';

// Heartbeats are the agents' main channel to the control plane, so each one
// must carry the host's JWT and speak only for the host the token names.
// Checking a token costs a signature verification and two database reads
// (host not deleted, credential family not revoked), so each token's answer
// is kept: a host heartbeating every second costs one check per `recheckMs`,
// not one per heartbeat, which keeps 10,000 hosts cheap. Refusals are kept
// too, so a flood of forged heartbeats cannot turn into a database storm.

export interface HostTokenCheck {
  hostId: string;
  expiresAt: Date;
}

export type AuthenticateHostToken = (token: string, now: Date) => Promise<HostTokenCheck>;

export interface HeartbeatAuthenticatorOptions {
  authenticate: AuthenticateHostToken;
  logger: Logger;
  /** How long an answer for a token is trusted before it is checked again (revocations take effect within this). */
  recheckMs?: number;
  /** Most tokens remembered; the oldest answers are dropped beyond it. */
  maxEntries?: number;
  now?: () => Date;
}

type Verdict = { ok: true; hostId: string; expiresAtMs: number; checkedAtMs: number } | { ok: false; checkedAtMs: number };

const REFUSAL_LOG_EVERY_MS = 60_000;

export class HeartbeatAuthenticator {
  private readonly verdicts = new Map<string, Verdict>();
  private readonly inFlight = new Map<string, Promise<Verdict>>();
  private readonly lastRefusalLog = new Map<string, number>();
  private readonly recheckMs: number;
  private readonly maxEntries: number;
  private readonly now: () => Date;
  refused = 0;

  constructor(private readonly options: HeartbeatAuthenticatorOptions) {
    this.recheckMs = options.recheckMs ?? 60_000;
    this.maxEntries = options.maxEntries ?? 50_000;
    this.now = options.now ?? (() => new Date());
  }

  /** True when `heartbeat` carries a valid, unrevoked host token for the host it claims to be. */
  async accept(heartbeat: eventsV1.HostHeartbeat): Promise<boolean> {
    const token = heartbeat.hostToken;
    if (!token) return this.refuse(heartbeat.hostId, 'no host token');
    const now = this.now().getTime();
    let verdict = this.verdicts.get(token);
    if (!verdict || now - verdict.checkedAtMs >= this.recheckMs) verdict = await this.check(token);
    if (!verdict.ok) return this.refuse(heartbeat.hostId, 'host token refused');
    if (verdict.expiresAtMs <= now) return this.refuse(heartbeat.hostId, 'host token expired');
    if (verdict.hostId !== heartbeat.hostId) return this.refuse(heartbeat.hostId, 'host token belongs to another host');
    return true;
  }

  private check(token: string): Promise<Verdict> {
    const pending = this.inFlight.get(token);
    if (pending) return pending;
    const checkedAtMs = this.now().getTime();
    const run = this.options
      .authenticate(token, new Date(checkedAtMs))
      .then((claims): Verdict => ({ ok: true, hostId: claims.hostId, expiresAtMs: claims.expiresAt.getTime(), checkedAtMs }))
      .catch((err: unknown): Verdict => {
        // A refusal is an answer; anything else (database down) is not remembered.
        if ((err as { name?: string }).name !== 'UnauthenticatedError') throw err;
        return { ok: false, checkedAtMs };
      })
      .then((verdict) => {
        this.remember(token, verdict);
        return verdict;
      })
      .finally(() => this.inFlight.delete(token));
    this.inFlight.set(token, run);
    return run;
  }

  private remember(token: string, verdict: Verdict): void {
    this.verdicts.delete(token);
    this.verdicts.set(token, verdict);
    while (this.verdicts.size > this.maxEntries) {
      const oldest = this.verdicts.keys().next().value;
      if (oldest === undefined) break;
      this.verdicts.delete(oldest);
    }
  }

  private refuse(hostId: string, why: string): false {
    this.refused++;
    const now = this.now().getTime();
    const key = `${hostId}\u0000${why}`;
    if (now - (this.lastRefusalLog.get(key) ?? -Infinity) >= REFUSAL_LOG_EVERY_MS) {
      if (this.lastRefusalLog.size > this.maxEntries) this.lastRefusalLog.clear();
      this.lastRefusalLog.set(key, now);
      // Never the token itself.
      this.options.logger.warn('heartbeat dropped', { hostId: hostId.slice(0, 64), reason: why });
    }
    return false;
  }
}
