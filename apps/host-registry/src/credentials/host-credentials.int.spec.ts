import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { registerHost } from '../hosts/host-inventory';
import { createRegistrationToken } from '../registration/registration-tokens';
import { sha256Hex } from '../registration/secrets';
import { authenticateHost, REFRESH_REFUSED, refreshHostCredentials, type CredentialPair, type CredentialPolicy } from './host-credentials';
import { HOST_TOKEN_REFUSED } from './host-tokens';

const policy: CredentialPolicy = { secret: 'r'.repeat(40), ttlSeconds: 900, refreshTtlSeconds: 7 * 86_400, retryWindowSeconds: 30 };
// Whole seconds, as JWT times are.
const t0 = new Date(Math.floor(Date.now() / 1000) * 1000);
const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);

describeWithDatabase('host credentials: refresh token rotation', () => {
  let db: TestDatabase;
  let hosts = 0;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db.drop());

  async function register(when = t0): Promise<CredentialPair> {
    const token = await createRegistrationToken(db.prisma, { ttlSeconds: 600, description: '' }, when);
    const { credentials } = await registerHost(
      db.prisma,
      { registrationToken: token.token, name: `host-${++hosts}`, agentAddress: '127.0.0.1:50060', capacity: { cpuMillis: 1, memoryMb: 1, diskMb: 1 }, drivers: [], labels: {} },
      policy,
      when,
    );
    return credentials;
  }
  const refresh = (token: string, when: Date) => refreshHostCredentials(db.prisma, token, policy, when);
  const row = (token: string) => db.prisma.refreshToken.findUniqueOrThrow({ where: { tokenHash: sha256Hex(token) } });
  const refused = { name: 'UnauthenticatedError', message: REFRESH_REFUSED };

  it('registers with a refresh token and rotates it along a chain of 5, each token used once', async () => {
    const first = await register();
    expect(first.refreshToken).toMatch(/^crr_/);
    expect(first.refreshTokenExpiresAt).toEqual(at(7 * 86_400));
    const familyId = (await row(first.refreshToken)).familyId;

    const chain = [first];
    for (let i = 1; i <= 5; i++) {
      const next = await refresh(chain[i - 1].refreshToken, at(i * 60));
      expect(next.hostId).toBe(first.hostId);
      expect(next.refreshToken).not.toBe(chain[i - 1].refreshToken);
      expect(next.hostToken).not.toBe(chain[i - 1].hostToken);
      expect(next.hostTokenExpiresAt).toEqual(at(i * 60 + 900));
      const claims = await authenticateHost(db.prisma, policy, next.hostToken, at(i * 60 + 1));
      expect(claims).toMatchObject({ hostId: first.hostId, familyId });
      chain.push(next);
    }

    const rows = await Promise.all(chain.map((pair) => row(pair.refreshToken)));
    rows.forEach((r, i) => {
      expect(r.familyId).toBe(familyId);
      expect(r.parentId).toBe(i === 0 ? null : rows[i - 1].id);
      if (i < rows.length - 1) {
        expect(r).toMatchObject({ usedAt: at((i + 1) * 60), replacedById: rows[i + 1].id, reissueCiphertext: null });
      } else {
        expect(r).toMatchObject({ usedAt: null, replacedById: null, revokedAt: null });
      }
    });
    // Only hashes and sealed copies are stored, never a token in clear.
    const stored = JSON.stringify(await db.prisma.refreshToken.findMany({ where: { familyId } }));
    for (const pair of chain) {
      expect(stored).not.toContain(pair.refreshToken);
      expect(stored).not.toContain(pair.hostToken);
    }
    expect((await db.prisma.host.findUniqueOrThrow({ where: { id: first.hostId } })).credentialHash).toBe(sha256Hex(chain[5].hostToken));
  });

  it('answers a retry within the window with the same pair, and revokes the family once the new token has been used', async () => {
    const first = await register();
    const fresh = await refresh(first.refreshToken, at(100));
    const retried = await refresh(first.refreshToken, at(110));
    expect(retried).toEqual(fresh);
    expect(await refresh(first.refreshToken, at(129))).toEqual(fresh);

    // The host got the answer after all and uses it: the spent token has no
    // retry left, so presenting it again is reuse.
    const next = await refresh(fresh.refreshToken, at(120));
    await expect(refresh(first.refreshToken, at(125))).rejects.toMatchObject(refused);
    await expect(refresh(next.refreshToken, at(126))).rejects.toMatchObject(refused);
    await expect(authenticateHost(db.prisma, policy, next.hostToken, at(127))).rejects.toMatchObject({ message: HOST_TOKEN_REFUSED });
  });

  it('revokes the whole family when a spent token comes back after the window; the latest token stops working', async () => {
    const first = await register();
    const second = await refresh(first.refreshToken, at(200));
    const third = await refresh(second.refreshToken, at(205));
    expect((await authenticateHost(db.prisma, policy, third.hostToken, at(206))).hostId).toBe(first.hostId);

    await expect(refresh(second.refreshToken, at(205 + 31))).rejects.toMatchObject(refused);
    const family = await db.prisma.refreshToken.findMany({ where: { familyId: (await row(first.refreshToken)).familyId } });
    expect(family).toHaveLength(3);
    for (const r of family) expect(r).toMatchObject({ revokedAt: at(236), reissueCiphertext: null });
    await expect(refresh(third.refreshToken, at(240))).rejects.toMatchObject(refused);
    await expect(authenticateHost(db.prisma, policy, third.hostToken, at(241))).rejects.toMatchObject({ name: 'UnauthenticatedError', message: HOST_TOKEN_REFUSED });
  });

  it('gives 20 concurrent refreshes with one token the same new pair (or a refusal), never two different children', async () => {
    const first = await register();
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => refresh(first.refreshToken, at(300))));
    const answers = results.filter((r): r is PromiseFulfilledResult<CredentialPair> => r.status === 'fulfilled').map((r) => r.value);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject(refused);
    expect(answers.length).toBeGreaterThanOrEqual(1);
    expect(new Set(answers.map((a) => a.refreshToken)).size).toBe(1);
    expect(new Set(answers.map((a) => a.hostToken)).size).toBe(1);
    const parent = await row(first.refreshToken);
    expect(await db.prisma.refreshToken.count({ where: { parentId: parent.id } })).toBe(1);
    expect(await db.prisma.refreshToken.count({ where: { familyId: parent.familyId, revokedAt: { not: null } } })).toBe(0);
    // The one child works.
    await expect(refresh(answers[0].refreshToken, at(301))).resolves.toMatchObject({ hostId: first.hostId });
  });

  it('refuses unknown, expired and revoked refresh tokens with one message', async () => {
    const first = await register();
    await expect(refresh('crr_unknown', at(1))).rejects.toMatchObject(refused);
    await expect(refresh('', at(1))).rejects.toMatchObject(refused);
    await expect(refresh(first.refreshToken, at(7 * 86_400))).rejects.toMatchObject(refused);
    // An expired token is not reuse: the family stays intact.
    expect((await row(first.refreshToken)).revokedAt).toBeNull();

    const other = await register();
    await db.prisma.refreshToken.update({ where: { tokenHash: sha256Hex(other.refreshToken) }, data: { revokedAt: at(1) } });
    await expect(refresh(other.refreshToken, at(2))).rejects.toMatchObject(refused);
  });

  it('refuses to refresh, and to authenticate, a deleted host', async () => {
    const pair = await register();
    await db.prisma.host.update({ where: { id: pair.hostId }, data: { deletedAt: at(1) } });
    await expect(refresh(pair.refreshToken, at(2))).rejects.toMatchObject(refused);
    await expect(authenticateHost(db.prisma, policy, pair.hostToken, at(2))).rejects.toMatchObject({ message: HOST_TOKEN_REFUSED });
  });
});

describeWithDatabase('host credentials: first registrations on an empty database', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db.drop());

  it('creates one signing key for many concurrent first registrations, all of which succeed', async () => {
    const tokens = await Promise.all(Array.from({ length: 30 }, () => createRegistrationToken(db.prisma, { ttlSeconds: 600, description: '' }, t0)));
    const fresh: CredentialPolicy = { ...policy, secret: 'n'.repeat(40) };
    const results = await Promise.all(
      tokens.map((token, i) =>
        registerHost(
          db.prisma,
          { registrationToken: token.token, name: `first-${i}`, agentAddress: '127.0.0.1:50060', capacity: { cpuMillis: 1, memoryMb: 1, diskMb: 1 }, drivers: [], labels: {} },
          fresh,
          t0,
        ),
      ),
    );
    expect(new Set(results.map((r) => r.hostId)).size).toBe(30);
    expect(await db.prisma.signingKey.count()).toBe(1);
  });
});
