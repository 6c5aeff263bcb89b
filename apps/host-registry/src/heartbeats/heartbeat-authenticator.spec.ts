import { UnauthenticatedError, UnavailableError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { eventsV1 } from '@corral/proto';
import { HeartbeatAuthenticator, type HostTokenCheck } from './heartbeat-authenticator';

describe('HeartbeatAuthenticator', () => {
  let clock = 0;
  const now = () => new Date(clock);
  const beat = (hostId: string, hostToken: string) => eventsV1.HostHeartbeat.fromPartial({ hostId, hostToken, seq: 1 });
  const valid: Record<string, HostTokenCheck> = {
    'tok-a': { hostId: 'a', expiresAt: new Date(600_000) },
    'tok-b': { hostId: 'b', expiresAt: new Date(600_000) },
  };
  let checks: string[];
  let failNext: Error | undefined;
  const authenticator = () =>
    new HeartbeatAuthenticator({
      logger: silentLogger,
      recheckMs: 60_000,
      maxEntries: 3,
      now,
      authenticate: async (token) => {
        checks.push(token);
        if (failNext) {
          const err = failNext;
          failNext = undefined;
          throw err;
        }
        const claims = valid[token];
        if (!claims) throw new UnauthenticatedError('host token is invalid or expired');
        return claims;
      },
    });

  beforeEach(() => {
    clock = 0;
    checks = [];
    failNext = undefined;
  });

  it('accepts a host speaking with its own token, checking the token once per recheck period', async () => {
    const auth = authenticator();
    for (let i = 0; i < 5; i++) expect(await auth.accept(beat('a', 'tok-a'))).toBe(true);
    expect(checks).toEqual(['tok-a']);
    clock = 60_000;
    expect(await auth.accept(beat('a', 'tok-a'))).toBe(true);
    expect(checks).toEqual(['tok-a', 'tok-a']);
  });

  it('shares one check among heartbeats that arrive together', async () => {
    const auth = authenticator();
    expect(await Promise.all([1, 2, 3].map(() => auth.accept(beat('a', 'tok-a'))))).toEqual([true, true, true]);
    expect(checks).toEqual(['tok-a']);
  });

  it('refuses no token, a bad token and another host\'s token, remembering refusals', async () => {
    const auth = authenticator();
    expect(await auth.accept(beat('a', ''))).toBe(false);
    expect(await auth.accept(beat('a', 'forged'))).toBe(false);
    expect(await auth.accept(beat('a', 'forged'))).toBe(false);
    expect(await auth.accept(beat('a', 'tok-b'))).toBe(false);
    expect(checks).toEqual(['forged', 'tok-b']);
    expect(auth.refused).toBe(4);
  });

  it('refuses a token once it has expired, even while its answer is remembered', async () => {
    const auth = authenticator();
    expect(await auth.accept(beat('a', 'tok-a'))).toBe(true);
    clock = 600_000;
    expect(await auth.accept(beat('a', 'tok-a'))).toBe(false);
  });

  it('does not remember a failure that is not a refusal (the database was down)', async () => {
    const auth = authenticator();
    failNext = new UnavailableError('database unavailable');
    await expect(auth.accept(beat('a', 'tok-a'))).rejects.toThrow('database unavailable');
    expect(await auth.accept(beat('a', 'tok-a'))).toBe(true);
    expect(checks).toEqual(['tok-a', 'tok-a']);
  });

  it('keeps at most maxEntries answers', async () => {
    const auth = authenticator();
    for (const token of ['x1', 'x2', 'x3', 'x4']) await auth.accept(beat('a', token));
    await auth.accept(beat('a', 'x1'));
    expect(checks).toEqual(['x1', 'x2', 'x3', 'x4', 'x1']);
  });
});
