import { createHash, randomUUID } from 'node:crypto';
import { UnauthenticatedError } from '@corral/domain';
import { isUniqueViolation, type PrismaClient } from '@corral/db';
import type { Logger } from '@corral/logging';
import { newBearerSecret, sha256Hex } from '../registration/secrets';
import { HOST_TOKEN_REFUSED, hostTokenKeyId, publicJwks, signHostToken, verifyHostToken, type HostTokenClaims, type PublicJwk } from './host-tokens';
import { SealedBox } from './sealed-box';
import { DEFAULT_ROTATION, HostKeyStore, type SigningKeySource } from './signing-keys';

// A host's credentials: a short-lived host token (JWT) plus a refresh token
// that buys the next pair. Refresh tokens form one family per registration;
// each is single-use. Spending one issues its child first and marks it used
// second, in one transaction, guarded so that of concurrent refreshes with
// one token exactly one spends it (parent_id is unique, too: a token never
// has two children). Presenting a spent token again:
//   - within the retry window, while its child is unused: the caller lost
//     the answer, so it gets the same pair again (kept sealed on the child);
//   - otherwise: someone else holds the family (a stolen token, or a host
//     running twice), so every token of the family is revoked.

export const DEFAULT_REFRESH_TTL_SECONDS = 30 * 24 * 3600;
export const DEFAULT_REFRESH_RETRY_WINDOW_SECONDS = 30;

/** One message for every refused refresh token. */
export const REFRESH_REFUSED = 'refresh token is invalid, expired or revoked';

export interface CredentialPolicy {
  /**
   * HOST_KEY_ENCRYPTION_KEY (at least 32 bytes): seals the signing keys'
   * private halves and the retry copy of issued pairs.
   */
  secret: string;
  /** Host token (JWT) lifetime. */
  ttlSeconds: number;
  refreshTtlSeconds?: number;
  /** How long after a refresh the same refresh token still gets that answer again. */
  retryWindowSeconds?: number;
  /** The signing keys; by default loaded from (and on first use created in) the database. */
  keys?: SigningKeySource;
  logger?: Logger;
}

export interface CredentialPair {
  hostId: string;
  hostToken: string;
  hostTokenExpiresAt: Date;
  refreshToken: string;
  refreshTokenExpiresAt: Date;
}

interface Resolved {
  box: SealedBox;
  keys: SigningKeySource;
  ttlSeconds: number;
  refreshTtlSeconds: number;
  retryWindowMs: number;
  logger?: Logger;
}

// Callers that pass no key source share one store per database client and
// secret, so concurrent calls do not each load (or create) the keys.
const defaultStores = new WeakMap<PrismaClient, Map<string, HostKeyStore>>();

function resolve(prisma: PrismaClient, policy: CredentialPolicy): Resolved {
  const box = new SealedBox(policy.secret);
  let keys = policy.keys;
  if (!keys) {
    const byClient = defaultStores.get(prisma) ?? new Map<string, HostKeyStore>();
    defaultStores.set(prisma, byClient);
    const id = createHash('sha256').update(policy.secret).update(String(policy.ttlSeconds)).digest('hex');
    let store = byClient.get(id);
    if (!store) {
      store = new HostKeyStore(prisma, box, { policy: { ...DEFAULT_ROTATION, tokenTtlSeconds: policy.ttlSeconds }, logger: policy.logger });
      byClient.set(id, store);
    }
    keys = store;
  }
  return {
    box,
    keys,
    ttlSeconds: policy.ttlSeconds,
    refreshTtlSeconds: policy.refreshTtlSeconds ?? DEFAULT_REFRESH_TTL_SECONDS,
    retryWindowMs: (policy.retryWindowSeconds ?? DEFAULT_REFRESH_RETRY_WINDOW_SECONDS) * 1000,
    logger: policy.logger,
  };
}

const addSeconds = (at: Date, s: number) => new Date(at.getTime() + s * 1000);
const reissueContext = (tokenId: string) => `refresh-token:${tokenId}`;

interface Minted {
  pair: CredentialPair;
  row: { id: string; familyId: string; hostId: string; tokenHash: string; issuedAt: Date; expiresAt: Date };
}

async function mint(r: Resolved, hostId: string, familyId: string, now: Date): Promise<Minted> {
  const ring = await r.keys.ring(now);
  const host = signHostToken(ring, { hostId, familyId }, r.ttlSeconds, now);
  const refreshToken = newBearerSecret('crr');
  const expiresAt = addSeconds(now, r.refreshTtlSeconds);
  return {
    pair: { hostId, hostToken: host.token, hostTokenExpiresAt: host.expiresAt, refreshToken, refreshTokenExpiresAt: expiresAt },
    row: { id: randomUUID(), familyId, hostId, tokenHash: sha256Hex(refreshToken), issuedAt: now, expiresAt },
  };
}

/**
 * The first pair of a new host, and the refresh-token row (a new family)
 * for the caller to insert in its registration transaction, after the host.
 */
export async function issueFirstCredentials(
  prisma: PrismaClient,
  policy: CredentialPolicy,
  hostId: string,
  now: Date,
): Promise<{ pair: CredentialPair; refreshTokenRow: Minted['row'] }> {
  const minted = await mint(resolve(prisma, policy), hostId, randomUUID(), now);
  return { pair: minted.pair, refreshTokenRow: minted.row };
}

class LostRace extends Error {}

const refused = (cause?: unknown) => new UnauthenticatedError(REFRESH_REFUSED, cause === undefined ? {} : { cause });

/** Spends `presented` and returns the next pair; see the module comment for reuse. */
export async function refreshHostCredentials(prisma: PrismaClient, presented: string, policy: CredentialPolicy, now: Date): Promise<CredentialPair> {
  const r = resolve(prisma, policy);
  if (!presented) throw refused();
  const tokenHash = sha256Hex(presented);
  const row = await prisma.refreshToken.findUnique({ where: { tokenHash } });
  if (!row || row.revokedAt || row.expiresAt.getTime() <= now.getTime()) throw refused();
  if (row.usedAt) return replayOrRevoke(prisma, r, row.id, now);

  const host = await prisma.host.findUnique({ where: { id: row.hostId }, select: { deletedAt: true } });
  if (!host || host.deletedAt) throw refused();

  const child = await mint(r, row.hostId, row.familyId, now);
  const sealed = r.box.seal(
    'refresh-reissue',
    JSON.stringify({ hostToken: child.pair.hostToken, hostTokenExpiresAt: child.pair.hostTokenExpiresAt.toISOString(), refreshToken: child.pair.refreshToken }),
    reissueContext(child.row.id),
  );
  try {
    await prisma.$transaction(async (tx) => {
      // The new token exists before the old one is spent (crash-safe order;
      // one transaction anyway). A concurrent refresh inserting its own
      // child for the same parent waits here on the unique parent_id, then fails.
      await tx.refreshToken.create({ data: { ...child.row, parentId: row.id, reissueCiphertext: sealed } });
      const spent = await tx.refreshToken.updateMany({
        where: { id: row.id, usedAt: null, revokedAt: null },
        // Its own retry copy is no longer needed: its parent's window closes when it is spent.
        data: { usedAt: now, replacedById: child.row.id, reissueCiphertext: null },
      });
      if (spent.count !== 1) throw new LostRace();
      await tx.host.update({ where: { id: row.hostId }, data: { credentialHash: sha256Hex(child.pair.hostToken) } });
    });
  } catch (err) {
    if (!(err instanceof LostRace) && !isUniqueViolation(err)) throw err;
    // Another call spent (or revoked) the token first: answer as a retry.
    return replayOrRevoke(prisma, r, row.id, now);
  }
  return child.pair;
}

async function replayOrRevoke(prisma: PrismaClient, r: Resolved, tokenId: string, now: Date): Promise<CredentialPair> {
  const row = await prisma.refreshToken.findUniqueOrThrow({ where: { id: tokenId } });
  if (row.revokedAt || !row.usedAt) throw refused();
  if (row.replacedById && now.getTime() - row.usedAt.getTime() <= r.retryWindowMs) {
    const child = await prisma.refreshToken.findUnique({ where: { id: row.replacedById } });
    if (child && !child.usedAt && !child.revokedAt && child.reissueCiphertext && child.expiresAt.getTime() > now.getTime()) {
      let sealed: { hostToken: string; hostTokenExpiresAt: string; refreshToken: string };
      try {
        sealed = JSON.parse(r.box.open('refresh-reissue', child.reissueCiphertext, reissueContext(child.id)));
      } catch (err) {
        throw refused(err);
      }
      return {
        hostId: child.hostId,
        hostToken: sealed.hostToken,
        hostTokenExpiresAt: new Date(sealed.hostTokenExpiresAt),
        refreshToken: sealed.refreshToken,
        refreshTokenExpiresAt: child.expiresAt,
      };
    }
  }
  const revoked = await revokeCredentialFamily(prisma, row.familyId, now);
  r.logger?.warn('spent refresh token presented again: its family is revoked', { hostId: row.hostId, familyId: row.familyId, revoked });
  throw refused();
}

/**
 * Revokes every refresh token of a family (and so every host token issued
 * with it, for checks that consult the database). Repeats until a pass finds
 * nothing: a refresh that had already locked its parent when the first pass
 * started commits its child before that pass ends, and the next pass sees it.
 */
export async function revokeCredentialFamily(prisma: PrismaClient, familyId: string, now: Date): Promise<number> {
  let total = 0;
  for (let pass = 0; pass < 10; pass++) {
    const { count } = await prisma.refreshToken.updateMany({ where: { familyId, revokedAt: null }, data: { revokedAt: now, reissueCiphertext: null } });
    total += count;
    if (count === 0) break;
  }
  return total;
}

/**
 * A host token checked against the keys and the database: valid signature
 * and claims, a host that still exists, and a refresh-token family that has
 * not been revoked. Services without database access verify the signature
 * and claims alone, against GetJwks.
 */
export async function authenticateHost(prisma: PrismaClient, policy: CredentialPolicy, token: string, now: Date): Promise<HostTokenClaims> {
  const r = resolve(prisma, policy);
  const kid = hostTokenKeyId(token);
  if (kid === undefined) throw new UnauthenticatedError(HOST_TOKEN_REFUSED);
  const claims = verifyHostToken(await r.keys.ringFor(kid), token, now);
  const [host, member, spoiled] = await Promise.all([
    prisma.host.findUnique({ where: { id: claims.hostId }, select: { deletedAt: true } }),
    prisma.refreshToken.findFirst({ where: { familyId: claims.familyId, hostId: claims.hostId }, select: { id: true } }),
    prisma.refreshToken.findFirst({
      where: { familyId: claims.familyId, OR: [{ revokedAt: { not: null } }, { hostId: { not: claims.hostId } }] },
      select: { id: true },
    }),
  ]);
  if (!host || host.deletedAt || !member || spoiled) throw new UnauthenticatedError(HOST_TOKEN_REFUSED);
  return claims;
}

/** The public keys that verify host tokens now, as JWKs (creating the first key if there is none yet). */
export async function hostTokenJwks(prisma: PrismaClient, policy: CredentialPolicy, now: Date): Promise<PublicJwk[]> {
  return publicJwks(await resolve(prisma, policy).keys.ring(now), now);
}
