import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NotFoundError, PermissionDeniedError, UnauthenticatedError } from '@corral/domain';
import { createInMemoryEventBus, Topics } from '@corral/events';
import { silentLogger } from '@corral/logging';
import { eventsV1, type hostRegistryV1 } from '@corral/proto';
import type { HostIdentity } from '../identity/identity';
import { refreshOnCredentialNotices, withFreshCredentials } from './credential-notices';
import { CredentialRefresher, type RefresherClock } from './credential-refresher';

// Out-of-schedule refreshes: a CredentialRefused notice, or a call refused
// as unauthenticated, makes the agent refresh at once through the same
// attempt as its scheduled refresh (so a refused refresh token still leads
// to the failure policy).

const MINUTE = 60_000;
const T0 = Date.parse('2026-01-01T00:00:00Z');

/** Scheduled refreshes never fire by themselves: only what the test triggers happens. */
function frozenClock(): RefresherClock & { current: number; pending: number } {
  const clock = {
    current: T0,
    pending: 0,
    now: () => clock.current,
    setTimeout: () => {
      clock.pending++;
      return clock.pending;
    },
    clearTimeout: () => {
      clock.pending--;
    },
  };
  return clock;
}

const identity: HostIdentity = {
  hostId: 'host-1',
  hostToken: 'jwt-0',
  expiresAt: new Date(T0 + 15 * MINUTE).toISOString(),
  registeredAt: new Date(T0).toISOString(),
  tokenIssuedAt: new Date(T0).toISOString(),
  refreshToken: 'crr_0',
  refreshTokenExpiresAt: new Date(T0 + 30 * 86_400_000).toISOString(),
} as HostIdentity;

function pair(n: number): hostRegistryV1.RefreshHostCredentialsResponse {
  return {
    hostId: 'host-1',
    hostToken: `jwt-${n}`,
    hostTokenExpiresAt: new Date(T0 + 30 * MINUTE),
    refreshToken: `crr_${n}`,
    refreshTokenExpiresAt: new Date(T0 + 30 * 86_400_000),
    certificate: undefined,
  };
}

const notice = (hostId: string): eventsV1.CredentialRefused => ({
  hostId,
  refusedBy: 'host-registry',
  messageKind: eventsV1.RefusedMessageKind.REFUSED_MESSAGE_KIND_HEARTBEAT,
  at: new Date(T0),
});

describe('refreshing when the control plane refuses the token', () => {
  let stateDir: string;
  let clock: ReturnType<typeof frozenClock>;
  const presented: string[] = [];
  let answers: Array<hostRegistryV1.RefreshHostCredentialsResponse | Error>;
  const refresher = (extra: { onFailure?: () => void } = {}) =>
    new CredentialRefresher({
      stateDir,
      identity,
      logger: silentLogger,
      clock,
      random: () => 0,
      minOnDemandIntervalMs: 10_000,
      refresh: async (request) => {
        presented.push(request.refreshToken);
        const next = answers.shift();
        if (!next || next instanceof Error) throw next ?? new Error('no answer scripted');
        return next;
      },
      ...extra,
    });

  beforeEach(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-notices-'));
    clock = frozenClock();
    presented.length = 0;
    answers = [pair(1), pair(2)];
  });
  afterEach(() => rmSync(stateDir, { recursive: true, force: true }));

  it("refreshes at once on a notice for its own host, not for another host's, and once for a burst", async () => {
    const bus = createInMemoryEventBus();
    const r = refresher();
    r.start();
    expect(clock.pending).toBe(1);
    refreshOnCredentialNotices({ bus, hostId: 'host-1', refresher: r, logger: silentLogger });

    bus.publish(Topics.credentialRefused, 'host-2', notice('host-2'));
    await bus.flush();
    expect(presented).toEqual([]);

    // host-registry and the scheduler (or two replicas) may both tell it.
    bus.publish(Topics.credentialRefused, 'host-1', notice('host-1'));
    bus.publish(Topics.credentialRefused, 'host-1', notice('host-1'));
    await bus.flush();
    await r.idle();
    expect(presented).toEqual(['crr_0']);
    expect(r.identity).toMatchObject({ hostToken: 'jwt-1', refreshToken: 'crr_1' });
    // The schedule restarts from the new token.
    expect(clock.pending).toBe(1);

    clock.current += 10_000;
    bus.publish(Topics.credentialRefused, 'host-1', notice('host-1'));
    await bus.flush();
    await r.idle();
    expect(presented).toEqual(['crr_0', 'crr_1']);
    await r.stop();
  });

  it('applies the failure policy when the refresh itself is refused (e.g. a deleted host)', async () => {
    answers = [new UnauthenticatedError('refresh token refused')];
    const failures: string[] = [];
    const r = refresher({ onFailure: () => failures.push('failed') });
    r.start();
    await r.refreshNow('test');
    expect(r.status.state).toBe('failed');
    expect(failures).toEqual(['failed']);
    // Nothing more to try.
    await r.refreshNow('test again');
    expect(presented).toEqual(['crr_0']);
  });

  it('does nothing before start or after stop', async () => {
    const r = refresher();
    await r.refreshNow('not started');
    r.start();
    await r.stop();
    await r.refreshNow('stopped');
    expect(presented).toEqual([]);
  });

  it('retries a call refused as unauthenticated or forbidden once, after a refresh; other errors pass through', async () => {
    const r = refresher();
    r.start();
    const tokensSeen: string[] = [];
    const call = (failFirstWith: Error) => {
      let first = true;
      return async () => {
        tokensSeen.push(r.identity.hostToken);
        if (first) {
          first = false;
          throw failFirstWith;
        }
        return 'ok';
      };
    };
    await expect(withFreshCredentials(r, call(new UnauthenticatedError('token expired')))).resolves.toBe('ok');
    expect(tokensSeen).toEqual(['jwt-0', 'jwt-1']);

    clock.current += 10_000;
    await expect(withFreshCredentials(r, call(new PermissionDeniedError('not yours')))).resolves.toBe('ok');
    expect(presented).toEqual(['crr_0', 'crr_1']);

    await expect(withFreshCredentials(r, call(new NotFoundError('no such thing')))).rejects.toThrow(NotFoundError);
    expect(presented).toHaveLength(2);
    await r.stop();
  });
});
