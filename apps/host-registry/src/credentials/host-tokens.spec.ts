import { createHmac, createSign, generateKeyPairSync, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { KeyRing, type RingKey } from './key-ring';
import { HOST_TOKEN_AUDIENCE, HOST_TOKEN_ISSUER, HOST_TOKEN_REFUSED, hostTokenKeyId, publicJwks, signHostToken, verifyHostToken } from './host-tokens';

const t0 = new Date('2026-11-23T12:00:00Z');
const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);
const sec = (d: Date) => Math.floor(d.getTime() / 1000);

function ringKey(id: string, activatesAt: Date, retiresAt: Date | null = null): RingKey & { privateKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    id,
    algorithm: 'ES256',
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    publicKey,
    privateKey,
    hasPrivateKey: true,
    createdAt: activatesAt,
    activatesAt,
    retiresAt,
  };
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A JWT assembled by hand, so the test does not depend on what jsonwebtoken agrees to sign. */
function forge(header: Record<string, unknown>, payload: Record<string, unknown>, sign: (input: string) => string): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${sign(input)}`;
}

const es256 = (key: KeyObject) => (input: string) => createSign('SHA256').update(input).sign({ key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
const rs256 = (key: KeyObject) => (input: string) => createSign('RSA-SHA256').update(input).sign(key).toString('base64url');
const hs256 = (secret: string | Buffer) => (input: string) => createHmac('sha256', secret).update(input).digest('base64url');

describe('host tokens', () => {
  const key = ringKey('key-1', at(-3600));
  const ring = new KeyRing([key]);
  const subject = { hostId: 'host-1', familyId: 'family-1' };
  const claims = (overrides: Record<string, unknown> = {}) => ({
    sub: 'host-1',
    typ: 'host',
    fam: 'family-1',
    jti: 'token-1',
    iss: HOST_TOKEN_ISSUER,
    aud: HOST_TOKEN_AUDIENCE,
    iat: sec(t0),
    exp: sec(at(900)),
    ...overrides,
  });
  const good = { alg: 'ES256', typ: 'JWT', kid: key.id };

  it('issues a token that verifies, carrying the signing key id, iss, aud and exp', () => {
    const issued = signHostToken(ring, subject, 900, t0);
    expect(issued).toMatchObject({ keyId: 'key-1', expiresAt: at(900) });
    expect(hostTokenKeyId(issued.token)).toBe('key-1');
    expect(verifyHostToken(ring, issued.token, at(899))).toMatchObject({ hostId: 'host-1', familyId: 'family-1', keyId: 'key-1', expiresAt: at(900) });
    const header = jwt.decode(issued.token, { complete: true })?.header;
    expect(header).toMatchObject({ alg: 'ES256', kid: 'key-1' });
    // The same claims forged by hand with the real key pass too: the table below fails for its one defect only.
    expect(verifyHostToken(ring, forge(good, claims(), es256(key.privateKey)), t0).hostId).toBe('host-1');
  });

  const attackerEc = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const attackerRsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const badTokens: [string, () => string, Date?][] = [
    ['alg none, no signature', () => forge({ alg: 'none', typ: 'JWT', kid: key.id }, claims(), () => '')],
    ['alg none via jsonwebtoken', () => jwt.sign(claims(), '', { algorithm: 'none', keyid: key.id })],
    ['HS256 signed with the public key PEM as secret (HS/RS confusion)', () => forge({ alg: 'HS256', typ: 'JWT', kid: key.id }, claims(), hs256(key.publicKeyPem))],
    ['HS256 signed with the public key DER as secret', () => forge({ alg: 'HS256', typ: 'JWT', kid: key.id }, claims(), hs256(key.publicKey.export({ format: 'der', type: 'spki' })))],
    ['RS256 with our kid, signed by another key', () => forge({ alg: 'RS256', typ: 'JWT', kid: key.id }, claims(), rs256(attackerRsa))],
    ['ES256 with our kid, signed by another key', () => forge(good, claims(), es256(attackerEc))],
    ['ES384 header on an ES256 key', () => forge({ ...good, alg: 'ES384' }, claims(), es256(key.privateKey))],
    ['wrong aud', () => forge(good, claims({ aud: 'someone-else' }), es256(key.privateKey))],
    ['wrong iss', () => forge(good, claims({ iss: 'evil-registry' }), es256(key.privateKey))],
    ['expired', () => forge(good, claims({ exp: sec(at(-1)) }), es256(key.privateKey))],
    ['expired, checked at expiry', () => forge(good, claims(), es256(key.privateKey)), at(900)],
    ['no exp', () => forge(good, claims({ exp: undefined }), es256(key.privateKey))],
    ['not yet valid (nbf)', () => forge(good, claims({ nbf: sec(at(60)) }), es256(key.privateKey))],
    ['unknown kid', () => forge({ ...good, kid: 'key-unknown' }, claims(), es256(attackerEc))],
    ['unknown kid, signed by our key', () => forge({ ...good, kid: 'key-unknown' }, claims(), es256(key.privateKey))],
    ['missing kid', () => forge({ alg: 'ES256', typ: 'JWT' }, claims(), es256(key.privateKey))],
    ['kid that is not a string', () => forge({ ...good, kid: 1 }, claims(), es256(key.privateKey))],
    ['not a host token (typ)', () => forge(good, claims({ typ: 'user' }), es256(key.privateKey))],
    ['no family', () => forge(good, claims({ fam: undefined }), es256(key.privateKey))],
    [
      'payload altered after signing',
      () => {
        const [h, , s] = forge(good, claims(), es256(key.privateKey)).split('.');
        return `${h}.${b64(claims({ sub: 'host-2' }))}.${s}`;
      },
    ],
    ['garbage', () => 'not.a.jwt'],
    ['empty', () => ''],
  ];

  // `when` has a default so that Jest does not count it as a `done` callback.
  it.each(badTokens)('refuses %s with one message', (_name, make, when = t0) => {
    const token = make();
    expect(() => verifyHostToken(ring, token, when)).toThrow(expect.objectContaining({ name: 'UnauthenticatedError', message: HOST_TOKEN_REFUSED }));
  });

  it('refuses a token of a key that has retired, and signs with nothing when no key is active', () => {
    const retired = ringKey('retired', at(-7200), at(-1));
    const token = forge({ ...good, kid: retired.id }, claims(), es256(retired.privateKey));
    expect(() => verifyHostToken(new KeyRing([retired, key]), token, t0)).toThrow(HOST_TOKEN_REFUSED);
    expect(() => signHostToken(new KeyRing([retired]), subject, 900, t0)).toThrow('no host signing key is active');
  });

  it('rotates: a published key verifies before it signs, new tokens carry it once active, old tokens verify until they expire', () => {
    const next = ringKey('key-2', at(3600));
    const oldKey = { ...key, retiresAt: at(3600 + 900 + 60) };
    const rotating = new KeyRing([oldKey, next]);

    const before = signHostToken(rotating, subject, 900, at(3599));
    expect(before.keyId).toBe('key-1');
    expect(publicJwks(rotating, at(3000)).map((k) => k.kid)).toEqual(['key-1', 'key-2']);

    const after = signHostToken(rotating, subject, 900, at(3600));
    expect(after.keyId).toBe('key-2');
    expect(verifyHostToken(rotating, before.token, at(3600 + 800)).keyId).toBe('key-1');
    expect(verifyHostToken(rotating, after.token, at(3600 + 800)).keyId).toBe('key-2');
    expect(() => verifyHostToken(rotating, before.token, at(3599 + 900))).toThrow(HOST_TOKEN_REFUSED);

    expect(publicJwks(rotating, at(3600 + 960)).map((k) => k.kid)).toEqual(['key-2']);
    const [jwk] = publicJwks(rotating, at(3600 + 960));
    expect(jwk).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig', activatesAt: at(3600), retiresAt: undefined });
    expect(Object.keys(jwk)).not.toContain('d');
  });
});
