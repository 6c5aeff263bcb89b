import { createPublicKey, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { UnauthenticatedError } from '@corral/domain';
import type { HostTokenCheck } from './host-token-gate';

// Verifies host JWTs outside host-registry, from the public keys it
// publishes (GetJwks), the way a resource server verifies an identity
// provider's tokens. The key set is fetched on first use, again when a token
// names a kid it does not hold (a newly published key; at most once per
// `minRefreshIntervalMs`, so forged kids cannot make a storm of fetches) and
// when it is older than `maxAgeMs` (so retired keys stop verifying). The
// algorithm comes from the key's own record, never from the token's header.
// What this cannot see is revocation (a deleted host, a revoked family):
// that lives in host-registry's database; tokens are short-lived.

export interface PublishedJwk {
  kid: string;
  kty: string;
  alg: string;
  crv: string;
  x: string;
  y: string;
  /** Unset while the key still signs. */
  retiresAt?: Date;
}

export interface PublishedJwks {
  keys: PublishedJwk[];
  issuer: string;
  audience: string;
}

export interface JwksHostTokenVerifierOptions {
  /** GetJwks on host-registry. A failure is "could not check" (not a refusal). */
  fetchJwks: () => Promise<PublishedJwks>;
  minRefreshIntervalMs?: number;
  maxAgeMs?: number;
  now?: () => Date;
}

/** One message for every refused token, as host-registry's own check. */
const REFUSED = 'host token is invalid or expired';
const ASYMMETRIC_EC = new Set(['ES256', 'ES384', 'ES512']);

interface VerificationKey {
  algorithm: jwt.Algorithm;
  publicKey: KeyObject;
  retiresAtMs: number | undefined;
}

interface KeySet {
  keys: Map<string, VerificationKey>;
  issuer: string;
  audience: string;
  fetchedAtMs: number;
}

export class JwksHostTokenVerifier {
  private keySet: KeySet | undefined;
  private fetching: Promise<KeySet> | undefined;
  private readonly minRefreshIntervalMs: number;
  private readonly maxAgeMs: number;
  private readonly now: () => Date;

  constructor(private readonly options: JwksHostTokenVerifierOptions) {
    this.minRefreshIntervalMs = options.minRefreshIntervalMs ?? 30_000;
    this.maxAgeMs = options.maxAgeMs ?? 5 * 60_000;
    this.now = options.now ?? (() => new Date());
  }

  /** The host a valid token names; `UnauthenticatedError` (one message) for any other token. */
  async verify(token: string, at: Date = this.now()): Promise<HostTokenCheck> {
    const kid = keyIdOf(token);
    if (kid === undefined) throw new UnauthenticatedError(REFUSED);
    let keySet = await this.current();
    if (!keySet.keys.has(kid) && this.now().getTime() - keySet.fetchedAtMs >= this.minRefreshIntervalMs) keySet = await this.refresh();
    const key = keySet.keys.get(kid);
    if (!key || (key.retiresAtMs !== undefined && key.retiresAtMs <= at.getTime())) throw new UnauthenticatedError(REFUSED);
    let claims: string | jwt.JwtPayload;
    try {
      claims = jwt.verify(token, key.publicKey, {
        algorithms: [key.algorithm],
        issuer: keySet.issuer,
        audience: keySet.audience,
        clockTimestamp: Math.floor(at.getTime() / 1000),
      });
    } catch (err) {
      throw new UnauthenticatedError(REFUSED, { cause: err });
    }
    if (typeof claims === 'string' || claims.typ !== 'host' || typeof claims.sub !== 'string' || !claims.sub || typeof claims.exp !== 'number') {
      throw new UnauthenticatedError(REFUSED);
    }
    return { hostId: claims.sub, expiresAt: new Date(claims.exp * 1000) };
  }

  private async current(): Promise<KeySet> {
    if (this.keySet && this.now().getTime() - this.keySet.fetchedAtMs < this.maxAgeMs) return this.keySet;
    return this.refresh();
  }

  private refresh(): Promise<KeySet> {
    this.fetching ??= this.options
      .fetchJwks()
      .then((published) => {
        this.keySet = keySetOf(published, this.now().getTime());
        return this.keySet;
      })
      .finally(() => (this.fetching = undefined));
    return this.fetching;
  }
}

function keyIdOf(token: string): string | undefined {
  const decoded = jwt.decode(token, { complete: true });
  const kid = decoded && typeof decoded === 'object' ? decoded.header.kid : undefined;
  return typeof kid === 'string' && kid.length > 0 ? kid : undefined;
}

/** Keys that are not EC with an EC algorithm are left out: they could only be a confusion attack. */
function keySetOf(published: PublishedJwks, fetchedAtMs: number): KeySet {
  const keys = new Map<string, VerificationKey>();
  for (const jwk of published.keys) {
    if (jwk.kty !== 'EC' || !ASYMMETRIC_EC.has(jwk.alg)) continue;
    try {
      const publicKey = createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, format: 'jwk' });
      keys.set(jwk.kid, { algorithm: jwk.alg as jwt.Algorithm, publicKey, retiresAtMs: jwk.retiresAt?.getTime() });
    } catch {
      // A malformed key verifies nothing.
    }
  }
  return { keys, issuer: published.issuer, audience: published.audience, fetchedAtMs };
}
