// Messages on the bus that speak for a host (heartbeats, workload state
// changes) must carry that host's JWT and speak only for the host it names.
// Checking a token costs a signature verification (and, in host-registry,
// database reads for revocation), so each token's answer is kept: a host
// publishing every second costs one check per `recheckMs`, not one per
// message, which keeps 10,000 hosts cheap. Refusals are kept too, so a flood
// of forged messages cannot turn into a database or JWKS storm. Shared by
// host-registry (heartbeats) and the scheduler (state changes).

export interface HostTokenCheck {
  hostId: string;
  expiresAt: Date;
}

/** Resolves the claims of a valid token; rejects with an `UnauthenticatedError` for a refused one (anything else is "could not check"). */
export type AuthenticateHostToken = (token: string, now: Date) => Promise<HostTokenCheck>;

export interface HostTokenGateOptions {
  authenticate: AuthenticateHostToken;
  logger: { warn(message: string, meta?: Record<string, unknown>): void };
  /** Logged (rate-limited, with the claimed host id and the reason, never the token) for each refusal. */
  droppedMessage: string;
  /** How long an answer for a token is trusted before it is checked again (revocations take effect within this). */
  recheckMs?: number;
  /** Most tokens remembered; the oldest answers are dropped beyond it. */
  maxEntries?: number;
  now?: () => Date;
}

type Verdict = { ok: true; hostId: string; expiresAtMs: number; checkedAtMs: number } | { ok: false; checkedAtMs: number };

const REFUSAL_LOG_EVERY_MS = 60_000;

export class HostTokenGate {
  private readonly verdicts = new Map<string, Verdict>();
  private readonly inFlight = new Map<string, Promise<Verdict>>();
  private readonly lastRefusalLog = new Map<string, number>();
  private readonly recheckMs: number;
  private readonly maxEntries: number;
  private readonly now: () => Date;
  refused = 0;

  constructor(private readonly options: HostTokenGateOptions) {
    this.recheckMs = options.recheckMs ?? 60_000;
    this.maxEntries = options.maxEntries ?? 50_000;
    this.now = options.now ?? (() => new Date());
  }

  /**
   * True when `token` is a valid, unexpired host token for `claimedHostId`.
   * Rejects only when the token could not be checked (its verifier failed
   * for another reason than refusing it): such an answer is not remembered.
   */
  async admit(token: string | undefined, claimedHostId: string): Promise<boolean> {
    if (!token) return this.refuse(claimedHostId, 'no host token');
    const now = this.now().getTime();
    let verdict = this.verdicts.get(token);
    if (!verdict || now - verdict.checkedAtMs >= this.recheckMs) verdict = await this.check(token);
    if (!verdict.ok) return this.refuse(claimedHostId, 'host token refused');
    if (verdict.expiresAtMs <= now) return this.refuse(claimedHostId, 'host token expired');
    if (verdict.hostId !== claimedHostId) return this.refuse(claimedHostId, 'host token belongs to another host');
    return true;
  }

  /** Counts and logs (rate-limited) a refusal decided elsewhere, e.g. a check the caller makes on top. */
  refuse(hostId: string, why: string, detail: Record<string, string> = {}): false {
    this.refused++;
    const now = this.now().getTime();
    const key = `${hostId}\u0000${why}`;
    if (now - (this.lastRefusalLog.get(key) ?? -Infinity) >= REFUSAL_LOG_EVERY_MS) {
      if (this.lastRefusalLog.size > this.maxEntries) this.lastRefusalLog.clear();
      this.lastRefusalLog.set(key, now);
      // Never the token itself.
      this.options.logger.warn(this.options.droppedMessage, { ...detail, hostId: hostId.slice(0, 64), reason: why });
    }
    return false;
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
}
