import { randomUUID } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { UnauthenticatedError } from '@corral/domain';
import type { KeyRing, RingKey } from './key-ring';

// Host tokens: short-lived JWTs naming a host, signed with the key ring's
// current key (ES256) and verified against the key named by `kid`, with the
// algorithm that key's own record allows. The token's header never chooses
// the algorithm, so `none` and HS256-signed-with-the-public-key fail.

export const HOST_TOKEN_ISSUER = 'corral-host-registry';
export const HOST_TOKEN_AUDIENCE = 'corral-control-plane';

/** One message for every refused host token. */
export const HOST_TOKEN_REFUSED = 'host token is invalid or expired';

export interface HostTokenClaims {
  hostId: string;
  /** The refresh-token family it was issued with; revoking the family refuses it. */
  familyId: string;
  tokenId: string;
  keyId: string;
  issuedAt: Date;
  expiresAt: Date;
}

export interface IssuedHostToken {
  token: string;
  expiresAt: Date;
  keyId: string;
}

const seconds = (at: Date) => Math.floor(at.getTime() / 1000);

export function signHostToken(ring: KeyRing, subject: { hostId: string; familyId: string }, ttlSeconds: number, now: Date): IssuedHostToken {
  const key = ring.signingKey(now);
  if (!key?.privateKey) throw new Error('no host signing key is active');
  const iat = seconds(now);
  const exp = iat + ttlSeconds;
  const token = jwt.sign({ sub: subject.hostId, typ: 'host', fam: subject.familyId, iat, exp }, key.privateKey, {
    algorithm: key.algorithm,
    keyid: key.id,
    issuer: HOST_TOKEN_ISSUER,
    audience: HOST_TOKEN_AUDIENCE,
    jwtid: randomUUID(),
  });
  return { token, expiresAt: new Date(exp * 1000), keyId: key.id };
}

/** The kid a token claims, without trusting anything else in it; undefined when there is none. */
export function hostTokenKeyId(token: string): string | undefined {
  const decoded = jwt.decode(token, { complete: true });
  const kid = decoded && typeof decoded === 'object' ? decoded.header.kid : undefined;
  return typeof kid === 'string' && kid.length > 0 ? kid : undefined;
}

/**
 * The claims of a valid host token; UnauthenticatedError (one message) for
 * anything else: no or unknown `kid`, a retired key, an algorithm other than
 * the key's, a bad signature, wrong `iss`/`aud`, missing or past `exp`, a
 * token that is not a host token.
 */
export function verifyHostToken(ring: KeyRing, token: string, now: Date): HostTokenClaims {
  const kid = hostTokenKeyId(token);
  const key: RingKey | undefined = kid === undefined ? undefined : ring.verificationKey(kid, now);
  if (!key) throw new UnauthenticatedError(HOST_TOKEN_REFUSED);
  let claims: string | jwt.JwtPayload;
  try {
    claims = jwt.verify(token, key.publicKey, {
      algorithms: [key.algorithm],
      issuer: HOST_TOKEN_ISSUER,
      audience: HOST_TOKEN_AUDIENCE,
      clockTimestamp: seconds(now),
    });
  } catch (err) {
    throw new UnauthenticatedError(HOST_TOKEN_REFUSED, { cause: err });
  }
  if (
    typeof claims === 'string' ||
    claims.typ !== 'host' ||
    typeof claims.sub !== 'string' ||
    typeof claims.fam !== 'string' ||
    typeof claims.jti !== 'string' ||
    typeof claims.exp !== 'number' ||
    typeof claims.iat !== 'number'
  ) {
    throw new UnauthenticatedError(HOST_TOKEN_REFUSED);
  }
  return {
    hostId: claims.sub,
    familyId: claims.fam,
    tokenId: claims.jti,
    keyId: key.id,
    issuedAt: new Date(claims.iat * 1000),
    expiresAt: new Date(claims.exp * 1000),
  };
}

export interface PublicJwk {
  kid: string;
  kty: string;
  alg: string;
  use: 'sig';
  crv: string;
  x: string;
  y: string;
  activatesAt: Date;
  /** Undefined while the key has no successor. */
  retiresAt: Date | undefined;
}

/** The public keys that verify at `now` (including ones published ahead), as JWKs. */
export function publicJwks(ring: KeyRing, now: Date): PublicJwk[] {
  return ring.verificationKeys(now).map((key) => {
    const jwk = key.publicKey.export({ format: 'jwk' });
    return {
      kid: key.id,
      kty: String(jwk.kty),
      alg: key.algorithm,
      use: 'sig',
      crv: String(jwk.crv ?? ''),
      x: String(jwk.x ?? ''),
      y: String(jwk.y ?? ''),
      activatesAt: key.activatesAt,
      retiresAt: key.retiresAt ?? undefined,
    };
  });
}
