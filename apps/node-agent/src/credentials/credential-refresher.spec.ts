import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeadlineExceededError, InternalError, UnauthenticatedError, UnavailableError } from '@corral/domain';
import { silentLogger, type Logger } from '@corral/logging';
import type { hostRegistryV1 } from '@corral/proto';
import { identityPath, loadIdentity, type HostIdentity } from '../identity/identity';
import { CredentialRefresher, type CredentialRefresherOptions, type PausableWorkloads, type RefresherClock } from './credential-refresher';

/** Timers that fire only when the test advances time. */
class ManualClock implements RefresherClock {
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private nextId = 1;
  constructor(public current: number) {}
  now = () => this.current;
  setTimeout = (fn: () => void, ms: number) => {
    const id = this.nextId++;
    this.timers.push({ at: this.current + ms, fn, id });
    return id;
  };
  clearTimeout = (handle: unknown) => {
    this.timers = this.timers.filter((t) => t.id !== handle);
  };
  /** When the next timer fires, relative to now. */
  nextIn(): number | undefined {
    const next = [...this.timers].sort((a, b) => a.at - b.at)[0];
    return next && next.at - this.current;
  }
  advance(ms: number): void {
    this.current += ms;
    for (const timer of this.timers.filter((t) => t.at <= this.current).sort((a, b) => a.at - b.at)) {
      this.timers = this.timers.filter((t) => t.id !== timer.id);
      timer.fn();
    }
  }
}

type Step = hostRegistryV1.RefreshHostCredentialsResponse | Error;

/** A host registry that answers RefreshHostCredentials from a script. */
function scriptedRegistry(steps: Step[], onCall?: () => void) {
  const presented: string[] = [];
  const refresh = async (request: hostRegistryV1.RefreshHostCredentialsRequest) => {
    presented.push(request.refreshToken);
    onCall?.();
    const step = steps.shift();
    if (!step) throw new Error('registry script exhausted');
    if (step instanceof Error) throw step;
    return step;
  };
  return { refresh, presented };
}

const MINUTE = 60_000;
const T0 = Date.parse('2026-01-01T00:00:00Z');

function pair(n: number, issuedAt: number): hostRegistryV1.RefreshHostCredentialsResponse {
  return {
    hostId: 'host-1',
    hostToken: `jwt-${n}`,
    hostTokenExpiresAt: new Date(issuedAt + 15 * MINUTE),
    refreshToken: `crr_${n}`,
    refreshTokenExpiresAt: new Date(issuedAt + 30 * 86_400_000),
    certificate: undefined,
  };
}

function recordingLogger() {
  const lines: Array<{ level: string; msg: string; meta?: unknown }> = [];
  const at = (level: string) => (msg: string, meta?: unknown) => void lines.push({ level, msg, meta });
  const logger = { ...silentLogger, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') } as unknown as Logger;
  return { logger, lines };
}

describe('CredentialRefresher', () => {
  let stateDir: string;
  let clock: ManualClock;
  const identity = (extra: Partial<HostIdentity> = {}): HostIdentity => ({
    hostId: 'host-1',
    hostToken: 'jwt-0',
    expiresAt: new Date(T0 + 15 * MINUTE).toISOString(),
    registeredAt: new Date(T0).toISOString(),
    tokenIssuedAt: new Date(T0).toISOString(),
    refreshToken: 'crr_0',
    refreshTokenExpiresAt: new Date(T0 + 30 * 86_400_000).toISOString(),
    ...extra,
  });

  beforeEach(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-refresher-'));
    clock = new ManualClock(T0);
  });
  afterEach(() => rmSync(stateDir, { recursive: true, force: true }));

  const refresher = (options: Partial<CredentialRefresherOptions> & Pick<CredentialRefresherOptions, 'refresh'>) =>
    new CredentialRefresher({ stateDir, identity: identity(), logger: silentLogger, clock, random: () => 0, ...options });

  it('refreshes at 2/3 of the JWT lifetime, earlier by the jitter, and again after each refresh', async () => {
    const registry = scriptedRegistry([pair(1, T0 + 10 * MINUTE - 45_000), pair(2, T0 + 20 * MINUTE)]);
    const r = refresher({ refresh: registry.refresh, random: () => 0.5 });
    r.start();
    // 2/3 of 15 min = 10 min, minus 0.5 × 10% of 15 min = 45 s.
    expect(clock.nextIn()).toBe(10 * MINUTE - 45_000);
    clock.advance(10 * MINUTE - 45_001);
    await r.idle();
    expect(registry.presented).toEqual([]);
    clock.advance(1);
    await r.idle();
    expect(registry.presented).toEqual(['crr_0']);
    expect(r.identity).toMatchObject({ hostToken: 'jwt-1', refreshToken: 'crr_1' });
    // The next one counts from when this token arrived.
    expect(clock.nextIn()).toBe(10 * MINUTE - 45_000);
    clock.advance(10 * MINUTE);
    await r.idle();
    expect(registry.presented).toEqual(['crr_0', 'crr_1']);
    expect(r.identity.refreshToken).toBe('crr_2');
    expect(r.status).toEqual({ state: 'ok' });
    await r.stop();
  });

  it('sends its CSR with each refresh, persists the renewed certificate before using it, and keeps it when an answer has none', async () => {
    const requests: hostRegistryV1.RefreshHostCredentialsRequest[] = [];
    const certificate = (n: number) => ({ certificate: `cert-${n}`, caCertificate: 'ca', expiresAt: new Date(T0 + 86_400_000) });
    const answers = [{ ...pair(1, T0 + 10 * MINUTE), certificate: certificate(1) }, pair(2, T0 + 20 * MINUTE)];
    const seenOnDisk: Array<string | undefined> = [];
    const r = refresher({
      csr: 'csr-pem',
      refresh: async (request) => {
        requests.push(request);
        return answers.shift() as hostRegistryV1.RefreshHostCredentialsResponse;
      },
      onRefreshed: () => void seenOnDisk.push(JSON.parse(readFileSync(identityPath(stateDir), 'utf8')).tls?.certificatePem),
    });
    r.start();
    clock.advance(10 * MINUTE);
    await r.idle();
    expect(requests).toEqual([{ refreshToken: 'crr_0', csr: 'csr-pem' }]);
    expect(r.identity.tls).toEqual({ certificatePem: 'cert-1', caCertificatePem: 'ca', expiresAt: new Date(T0 + 86_400_000).toISOString() });
    clock.advance(10 * MINUTE);
    await r.idle();
    expect(requests).toHaveLength(2);
    // No certificate in the second answer (no CA any more): the one we have stays.
    expect(r.identity.tls?.certificatePem).toBe('cert-1');
    expect(seenOnDisk).toEqual(['cert-1', 'cert-1']);
    await r.stop();
  });

  it('refreshes at once when the stored token is already past its refresh time', async () => {
    clock.current = T0 + 14 * MINUTE;
    const registry = scriptedRegistry([pair(1, T0 + 14 * MINUTE)]);
    const r = refresher({ refresh: registry.refresh });
    r.start();
    expect(clock.nextIn()).toBe(0);
    clock.advance(0);
    await r.idle();
    expect(registry.presented).toEqual(['crr_0']);
    await r.stop();
  });

  it('persists the new pair before using it', async () => {
    const seenOnDisk: Array<HostIdentity | undefined> = [];
    const registry = scriptedRegistry([pair(1, T0 + 10 * MINUTE)]);
    const r = refresher({
      refresh: registry.refresh,
      onRefreshed: () => {
        seenOnDisk.push(JSON.parse(readFileSync(identityPath(stateDir), 'utf8')));
      },
    });
    r.start();
    clock.advance(10 * MINUTE);
    await r.idle();
    expect(seenOnDisk).toEqual([expect.objectContaining({ hostToken: 'jwt-1', refreshToken: 'crr_1', expiresAt: new Date(T0 + 25 * MINUTE).toISOString() })]);
    expect(await loadIdentity(stateDir)).toEqual(r.identity);
    await r.stop();
  });

  it('does not use a pair it could not persist, and asks again with the same token', async () => {
    const registry = scriptedRegistry([pair(1, T0), pair(1, T0)]);
    let failWrites = 1;
    const persisted: HostIdentity[] = [];
    const r = refresher({
      refresh: registry.refresh,
      persist: async (next) => {
        if (failWrites-- > 0) throw new Error('ENOSPC');
        persisted.push(next);
      },
    });
    r.start();
    clock.advance(10 * MINUTE);
    await r.idle();
    expect(r.identity.refreshToken).toBe('crr_0');
    clock.advance(500);
    await r.idle();
    expect(registry.presented).toEqual(['crr_0', 'crr_0']);
    expect(persisted).toHaveLength(1);
    expect(r.identity.refreshToken).toBe('crr_1');
    await r.stop();
  });

  it('retries a lost answer with the SAME token, backing off, and gets the same pair', async () => {
    const registry = scriptedRegistry([new UnavailableError('connection reset'), new DeadlineExceededError('deadline'), new InternalError('boom'), pair(1, T0)]);
    const r = refresher({ refresh: registry.refresh });
    r.start();
    clock.advance(10 * MINUTE);
    await r.idle();
    expect(clock.nextIn()).toBe(500);
    clock.advance(500);
    await r.idle();
    expect(clock.nextIn()).toBe(1000);
    clock.advance(1000);
    await r.idle();
    expect(clock.nextIn()).toBe(2000);
    clock.advance(2000);
    await r.idle();
    expect(registry.presented).toEqual(['crr_0', 'crr_0', 'crr_0', 'crr_0']);
    expect(r.identity.refreshToken).toBe('crr_1');
    expect(r.status.state).toBe('ok');
    await r.stop();
  });

  describe('when the registry refuses the refresh token', () => {
    const workloads = (): PausableWorkloads & { paused: string[] } => {
      const paused: string[] = [];
      return {
        paused,
        list: () => [
          { workloadId: 'w-proc', driver: 'process', state: 'running' },
          { workloadId: 'w-stopped', driver: 'process', state: 'stopped' },
          { workloadId: 'w-nopause', driver: 'nopause', state: 'running' },
          { workloadId: 'w-qemu', driver: 'qemu', state: 'running' },
        ],
        pause: async (id) => {
          paused.push(id);
        },
      };
    };

    it('keep-running (default): leaves workloads alone, logs an error and reports it', async () => {
      const { logger, lines } = recordingLogger();
      const registry = scriptedRegistry([new UnauthenticatedError('refresh token is invalid, expired or revoked')]);
      const w = workloads();
      const reports: unknown[] = [];
      const r = refresher({ refresh: registry.refresh, logger, workloads: w, onFailure: (s) => reports.push(s) });
      r.start();
      clock.advance(10 * MINUTE);
      await r.idle();
      expect(w.paused).toEqual([]);
      expect(r.status).toEqual({ state: 'failed', reason: expect.stringContaining('refused') });
      expect(reports).toEqual([r.status]);
      expect(lines.filter((l) => l.level === 'error')).toEqual([expect.objectContaining({ msg: expect.stringContaining('workloads keep running') })]);
      // No more attempts: the family is gone.
      expect(clock.nextIn()).toBeUndefined();
      await r.stop();
    });

    it('pause-all: pauses every running workload whose driver can pause', async () => {
      const registry = scriptedRegistry([new UnauthenticatedError('refresh token is invalid, expired or revoked')]);
      const w = workloads();
      const r = refresher({ refresh: registry.refresh, policy: 'pause-all', workloads: w, canPause: (driver) => driver !== 'nopause' });
      r.start();
      clock.advance(10 * MINUTE);
      await r.idle();
      expect(w.paused).toEqual(['w-proc', 'w-qemu']);
      expect(r.status).toMatchObject({ state: 'failed', paused: ['w-proc', 'w-qemu'] });
      await r.stop();
    });
  });

  it('loads an identity file written before refresh tokens, and says once that it cannot refresh', async () => {
    writeFileSync(
      identityPath(stateDir),
      JSON.stringify({ hostId: 'host-old', hostToken: 'legacy', expiresAt: new Date(T0 + 86_400_000).toISOString(), registeredAt: new Date(T0).toISOString() }),
      { mode: 0o600 },
    );
    const stored = await loadIdentity(stateDir);
    expect(stored).toMatchObject({ hostId: 'host-old', hostToken: 'legacy' });
    if (!stored) throw new Error('identity not loaded');
    expect(stored.refreshToken).toBeUndefined();
    const { logger, lines } = recordingLogger();
    const registry = scriptedRegistry([]);
    const r = new CredentialRefresher({ stateDir, identity: stored, refresh: registry.refresh, logger, clock });
    r.start();
    r.start();
    clock.advance(2 * 86_400_000);
    await r.idle();
    expect(registry.presented).toEqual([]);
    expect(r.status.state).toBe('cannot-refresh');
    expect(lines.filter((l) => /cannot be refreshed until this agent is registered again/.test(l.msg))).toHaveLength(1);
    await r.stop();
  });

  it('stop cancels the next refresh', async () => {
    const registry = scriptedRegistry([pair(1, T0)]);
    const r = refresher({ refresh: registry.refresh });
    r.start();
    await r.stop();
    clock.advance(60 * MINUTE);
    await r.idle();
    expect(registry.presented).toEqual([]);
  });
});
