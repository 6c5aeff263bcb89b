import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { JwksHostTokenVerifier, type PublishedJwk, type PublishedJwks } from './jwks-host-token-verifier';

describe('JwksHostTokenVerifier', () => {
  const ISSUER = 'corral-host-registry';
  const AUDIENCE = 'corral-control-plane';
  let clockMs = 1_000_000_000;
  const now = () => new Date(clockMs);

  function ecKey(kid: string): { kid: string; privateKey: KeyObject; jwk: PublishedJwk } {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const exported = publicKey.export({ format: 'jwk' });
    return { kid, privateKey, jwk: { kid, kty: 'EC', alg: 'ES256', crv: String(exported.crv), x: String(exported.x), y: String(exported.y) } };
  }

  function sign(key: { kid: string; privateKey: KeyObject }, claims: Record<string, unknown> = {}, options: jwt.SignOptions = {}): string {
    const iat = Math.floor(clockMs / 1000);
    return jwt.sign({ sub: 'host-a', typ: 'host', iat, exp: iat + 900, ...claims }, key.privateKey, {
      algorithm: 'ES256',
      keyid: key.kid,
      issuer: ISSUER,
      audience: AUDIENCE,
      ...options,
    });
  }

  const first = ecKey('k1');
  const second = ecKey('k2');
  let published: PublishedJwk[];
  let fetches: number;
  const verifier = () =>
    new JwksHostTokenVerifier({
      now,
      minRefreshIntervalMs: 30_000,
      maxAgeMs: 300_000,
      fetchJwks: async (): Promise<PublishedJwks> => {
        fetches++;
        return { keys: published, issuer: ISSUER, audience: AUDIENCE };
      },
    });

  beforeEach(() => {
    published = [first.jwk];
    fetches = 0;
  });

  it('returns the host a token from a published key names', async () => {
    const check = await verifier().verify(sign(first));
    expect(check.hostId).toBe('host-a');
    expect(check.expiresAt.getTime()).toBe((Math.floor(clockMs / 1000) + 900) * 1000);
  });

  it('fetches the key set again for a kid it does not hold, at most once per interval', async () => {
    const v = verifier();
    await v.verify(sign(first));
    expect(fetches).toBe(1);
    // Published after the first fetch: found once the interval allows a refresh.
    published = [first.jwk, second.jwk];
    await expect(v.verify(sign(second))).rejects.toMatchObject({ name: 'UnauthenticatedError' });
    expect(fetches).toBe(1);
    clockMs += 30_000;
    await expect(v.verify(sign(second))).resolves.toMatchObject({ hostId: 'host-a' });
    expect(fetches).toBe(2);
    // Forged kids do not refetch inside the interval.
    for (let i = 0; i < 5; i++) await expect(v.verify(sign({ kid: `forged-${i}`, privateKey: second.privateKey }))).rejects.toThrow('host token is invalid or expired');
    expect(fetches).toBe(2);
  });

  it.each([
    ['a signature by another key under a published kid', () => sign({ kid: 'k1', privateKey: second.privateKey })],
    ['no kid', () => jwt.sign({ sub: 'host-a', typ: 'host' }, first.privateKey, { algorithm: 'ES256', issuer: ISSUER, audience: AUDIENCE, expiresIn: 900 })],
    ['another issuer', () => sign(first, {}, { issuer: 'someone-else' })],
    ['another audience', () => sign(first, {}, { audience: 'someone-else' })],
    ['an expired token', () => sign(first, { exp: Math.floor(clockMs / 1000) - 1 })],
    ['a token that is not a host token', () => sign(first, { typ: 'user' })],
    ['HS256 keyed with the public key', () => jwt.sign({ sub: 'host-a', typ: 'host' }, JSON.stringify(first.jwk), { algorithm: 'HS256', keyid: 'k1', issuer: ISSUER, audience: AUDIENCE, expiresIn: 900 })],
    ['an unsigned token', () => jwt.sign({ sub: 'host-a', typ: 'host' }, '', { algorithm: 'none', keyid: 'k1', issuer: ISSUER, audience: AUDIENCE, expiresIn: 900 })],
    ['garbage', () => 'not-a-jwt'],
  ])('refuses %s', async (_what, token) => {
    await expect(verifier().verify(token())).rejects.toMatchObject({ name: 'UnauthenticatedError', message: 'host token is invalid or expired' });
  });

  it('refuses tokens of a retired key', async () => {
    published = [{ ...first.jwk, retiresAt: new Date(clockMs - 1) }];
    await expect(verifier().verify(sign(first))).rejects.toMatchObject({ name: 'UnauthenticatedError' });
  });

  it('reports a failed fetch as that failure, not as a refusal', async () => {
    const v = new JwksHostTokenVerifier({ now, fetchJwks: () => Promise.reject(new Error('host-registry unavailable')) });
    await expect(v.verify(sign(first))).rejects.toThrow('host-registry unavailable');
  });
});
