import { isCorralError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { hostRegistryV1 } from '@corral/proto';
import { saveIdentity, tlsCertificateOf, type HostIdentity } from '../identity/identity';

// Keeps the host's short-lived JWT fresh with the single-use refresh token
// from registration. The server rotates the refresh token on every use, so
// the order matters: the new pair is persisted before anything uses it, and
// an answer that may have been lost is asked for again with the SAME token
// (inside the server's retry window that returns the identical pair; a new
// token would be a reuse and revoke the whole family).

export const CREDENTIAL_FAILURE_POLICIES = ['keep-running', 'pause-all'] as const;
/**
 * What the agent does once its credentials cannot be refreshed any more
 * (AGENT_CREDENTIAL_FAILURE_POLICY): `keep-running` leaves workloads alone
 * and reports the failure; `pause-all` also pauses every running workload
 * whose driver can pause.
 */
export type CredentialFailurePolicy = (typeof CREDENTIAL_FAILURE_POLICIES)[number];

export type RefreshHostCredentials = (request: hostRegistryV1.RefreshHostCredentialsRequest) => Promise<hostRegistryV1.RefreshHostCredentialsResponse>;

export type TimerHandle = unknown;

/** Time and timers, injected so tests advance them by hand. */
export interface RefresherClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const systemClock: RefresherClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    // A pending refresh must not keep a stopping process alive.
    timer.unref?.();
    return timer;
  },
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** The workloads the `pause-all` policy acts on (the WorkloadSupervisor). */
export interface PausableWorkloads {
  list(): ReadonlyArray<{ workloadId: string; driver: string; state: string }>;
  pause(workloadId: string): Promise<unknown>;
}

export type CredentialState =
  /** Refreshes are scheduled (or under way). */
  | 'ok'
  /** The identity has no refresh token (written before agents refreshed). */
  | 'cannot-refresh'
  /** The registry refused the refresh token: re-registration needed. */
  | 'failed';

export interface CredentialStatus {
  state: CredentialState;
  /** Why, when not ok. */
  reason?: string;
  /** Workloads paused by the `pause-all` policy. */
  paused?: string[];
}

export interface CredentialRefresherOptions {
  stateDir: string;
  identity: HostIdentity;
  refresh: RefreshHostCredentials;
  logger: Logger;
  policy?: CredentialFailurePolicy;
  /** Needed for `pause-all`. */
  workloads?: PausableWorkloads;
  /** Whether a driver has the pause capability; without it every driver is tried. */
  canPause?: (driver: string) => boolean;
  clock?: RefresherClock;
  /** In [0, 1): spreads refreshes of many agents. Default Math.random. */
  random?: () => number;
  /** Fraction of the JWT lifetime after which to refresh. Default 2/3. */
  refreshAt?: number;
  /** Up to this fraction of the lifetime earlier, by `random`. Default 0.1. */
  jitter?: number;
  /** Backoff between retries of a failed attempt. Default 500 ms doubling to 10 s. */
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** Sent with every refresh so the registry renews the host's TLS certificate. */
  csr?: string;
  /** Persists a new identity; default: atomically to `<stateDir>/identity.json`. */
  persist?: (identity: HostIdentity) => Promise<void>;
  /** Called with each new identity, after it has been persisted. */
  onRefreshed?: (identity: HostIdentity) => void;
  /** Called once when refreshing has failed for good (after the policy ran). */
  onFailure?: (status: CredentialStatus) => void;
  /**
   * Least time between an out-of-schedule refresh (refreshNow) and the
   * previous refresh of any kind. Default 10 s: several refusal notices for
   * one stale token cost one refresh.
   */
  minOnDemandIntervalMs?: number;
}

/** The answer may have been lost: ask again with the same token. */
const LOST_ANSWER = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED']);
/** The registry will not refresh with this token, whatever the retry. */
const REFUSED = new Set(['UNAUTHENTICATED', 'PERMISSION_DENIED', 'NOT_FOUND']);

/** Used when the stored identity says nothing about the token's lifetime. */
const FALLBACK_LIFETIME_MS = 15 * 60_000;

export class CredentialRefresher {
  private current: HostIdentity;
  private state: CredentialStatus;
  private timer: TimerHandle | undefined;
  private inflight: Promise<void> | undefined;
  private stopped = false;
  private started = false;
  private retryDelayMs: number;
  /** When the last attempt (scheduled or on demand) started; undefined before the first. */
  private lastAttemptAt: number | undefined;
  private readonly clock: RefresherClock;
  private readonly random: () => number;

  constructor(private readonly options: CredentialRefresherOptions) {
    this.current = options.identity;
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.retryDelayMs = options.retryInitialMs ?? 500;
    this.state = { state: 'ok' };
  }

  /** The identity in use: always one already persisted. */
  get identity(): HostIdentity {
    return this.current;
  }

  get status(): CredentialStatus {
    return { ...this.state };
  }

  /** Schedules the first refresh (at once when the stored token is past its refresh time). */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    if (!this.current.refreshToken) {
      this.state = { state: 'cannot-refresh', reason: 'the stored identity has no refresh token (written before agents refreshed)' };
      this.options.logger.warn('host credentials cannot be refreshed until this agent is registered again: the stored identity has no refresh token', {
        hostId: this.current.hostId,
        expiresAt: this.current.expiresAt,
      });
      return;
    }
    this.schedule(this.refreshDueInMs());
  }

  /** Milliseconds from now until the next refresh is due (>= 0). */
  refreshDueInMs(): number {
    const now = this.clock.now();
    const expiresAt = parseTime(this.current.expiresAt);
    if (expiresAt === undefined) return 0;
    const issuedAt = parseTime(this.current.tokenIssuedAt) ?? parseTime(this.current.registeredAt);
    const lifetime = issuedAt !== undefined && issuedAt < expiresAt ? expiresAt - issuedAt : FALLBACK_LIFETIME_MS;
    const start = expiresAt - lifetime;
    const jitter = lifetime * (this.options.jitter ?? 0.1) * this.random();
    const due = start + lifetime * (this.options.refreshAt ?? 2 / 3) - jitter;
    return Math.max(0, Math.round(due - now));
  }

  /**
   * Refreshes at once, out of schedule, because the control plane refused
   * the current token (a CredentialRefused notice, or a call answering
   * UNAUTHENTICATED). It is the same attempt as a scheduled refresh, so a
   * refused refresh token leads to the failure policy. Joins an attempt
   * under way; does nothing before start, after stop or failure, or within
   * `minOnDemandIntervalMs` of the previous attempt. Never rejects.
   */
  refreshNow(why: string): Promise<void> {
    if (!this.started || this.stopped || this.state.state !== 'ok' || !this.current.refreshToken) return Promise.resolve();
    if (this.inflight) return this.inflight;
    const now = this.clock.now();
    if (this.lastAttemptAt !== undefined && now - this.lastAttemptAt < (this.options.minOnDemandIntervalMs ?? 10_000)) return Promise.resolve();
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.options.logger.warn('refreshing host credentials now: the control plane refused the current token', { hostId: this.current.hostId, why });
    return this.run();
  }

  /** Resolves once no attempt is under way (tests: after advancing the clock). */
  async idle(): Promise<void> {
    while (this.inflight) await this.inflight;
  }

  /** Cancels the next refresh and waits for one under way (its answer is still persisted). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    await this.idle();
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      void this.run();
    }, delayMs);
  }

  private run(): Promise<void> {
    this.lastAttemptAt = this.clock.now();
    const attempt = this.attempt().finally(() => {
      this.inflight = undefined;
    });
    this.inflight = attempt;
    return attempt;
  }

  private async attempt(): Promise<void> {
    const presented = this.current.refreshToken;
    if (!presented) return;
    let response: hostRegistryV1.RefreshHostCredentialsResponse;
    try {
      response = await this.options.refresh({ refreshToken: presented, ...(this.options.csr ? { csr: this.options.csr } : {}) });
    } catch (err) {
      const code = isCorralError(err) ? err.code : undefined;
      if (code !== undefined && REFUSED.has(code)) {
        await this.fail(`the host registry refused the refresh token: ${(err as Error).message}`);
        return;
      }
      // The token may or may not have been spent: only the same token can
      // get the same answer back.
      this.options.logger.warn(
        LOST_ANSWER.has(code ?? '') ? 'host credential refresh got no answer, retrying with the same token' : 'host credential refresh failed, retrying with the same token',
        { hostId: this.current.hostId, inMs: this.retryDelayMs, err: (err as Error).message },
      );
      this.retryLater();
      return;
    }

    const next: HostIdentity = {
      ...this.current,
      hostToken: response.hostToken,
      expiresAt: response.hostTokenExpiresAt?.toISOString(),
      refreshToken: response.refreshToken,
      refreshTokenExpiresAt: response.refreshTokenExpiresAt?.toISOString(),
      tokenIssuedAt: new Date(this.clock.now()).toISOString(),
    };
    // The renewed certificate rides in the same file as the pair, so it too
    // is persisted before anything serves it; no certificate in the answer
    // (no CA, no CSR) keeps the one we have.
    const tls = tlsCertificateOf(response.certificate);
    if (tls) next.tls = tls;
    try {
      await (this.options.persist ?? ((identity) => saveIdentity(this.options.stateDir, identity)))(next);
    } catch (err) {
      // Not persisted, so not used: a crash now would leave only the old
      // token. Asking again with it inside the retry window returns this pair.
      this.options.logger.error('could not persist refreshed host credentials, retrying with the same token', {
        hostId: this.current.hostId,
        inMs: this.retryDelayMs,
        err: (err as Error).message,
      });
      this.retryLater();
      return;
    }
    this.current = next;
    this.retryDelayMs = this.options.retryInitialMs ?? 500;
    this.options.logger.debug('host credentials refreshed', { hostId: next.hostId, expiresAt: next.expiresAt });
    this.options.onRefreshed?.(next);
    this.schedule(this.refreshDueInMs());
  }

  private retryLater(): void {
    const delay = this.retryDelayMs;
    this.retryDelayMs = Math.min(delay * 2, this.options.retryMaxMs ?? 10_000);
    this.schedule(delay);
  }

  private async fail(reason: string): Promise<void> {
    const policy = this.options.policy ?? 'keep-running';
    this.state = { state: 'failed', reason };
    if (policy === 'pause-all') this.state.paused = await this.pauseAll();
    this.options.logger.error(
      policy === 'pause-all'
        ? 'host credentials can no longer be refreshed: running workloads paused (AGENT_CREDENTIAL_FAILURE_POLICY=pause-all); register this agent again'
        : 'host credentials can no longer be refreshed: workloads keep running (AGENT_CREDENTIAL_FAILURE_POLICY=keep-running); register this agent again',
      { hostId: this.current.hostId, reason, policy, paused: this.state.paused },
    );
    this.options.onFailure?.(this.status);
  }

  private async pauseAll(): Promise<string[]> {
    const paused: string[] = [];
    const workloads = this.options.workloads;
    if (!workloads) return paused;
    for (const workload of workloads.list()) {
      if (workload.state !== 'running') continue;
      if (this.options.canPause && !this.options.canPause(workload.driver)) {
        this.options.logger.warn('workload left running: its driver cannot pause', { workloadId: workload.workloadId, driver: workload.driver });
        continue;
      }
      try {
        await workloads.pause(workload.workloadId);
        paused.push(workload.workloadId);
      } catch (err) {
        this.options.logger.error('could not pause workload', { workloadId: workload.workloadId, err: (err as Error).message });
      }
    }
    return paused;
  }
}

function parseTime(value: string | undefined): number | undefined {
  if (!value) return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}
