import { InvalidArgumentError, UnauthenticatedError } from '@corral/domain';
import type { Prisma, PrismaClient } from '@corral/db';
import { apiKeyPrefixOf, generateApiKey, hashApiKey, sameHash } from './key-format';

/** A Prisma client or an open transaction on one. */
export type Db = PrismaClient | Prisma.TransactionClient;

export interface IssueApiKeyInput {
  admin: boolean;
  /** The team whose resources the key reaches; required unless `admin`. */
  teamId?: string | null;
  name: string;
}

export interface IssuedApiKey {
  id: string;
  /** The whole key. Shown once: only its hash is kept. */
  key: string;
  prefix: string;
}

export interface AuthenticatedKey {
  keyId: string;
  admin: boolean;
  teamId: string | null;
}

export interface AuthenticateOptions {
  now?: () => Date;
}

export const API_KEY_NAME_MAX_LENGTH = 100;
/** lastUsedAt is a hint for operators, not an audit log: one write a minute per key is plenty. */
export const LAST_USED_RESOLUTION_MS = 60_000;

export async function issueApiKey(db: Db, input: IssueApiKeyInput): Promise<IssuedApiKey> {
  const name = input.name.trim();
  if (name.length === 0 || name.length > API_KEY_NAME_MAX_LENGTH) {
    throw new InvalidArgumentError(`name must be 1-${API_KEY_NAME_MAX_LENGTH} characters`, { field: 'name' });
  }
  // A non-admin key without a team would reach nothing; refuse to make one
  // rather than leave its meaning to each caller.
  if (!input.admin && !input.teamId) throw new InvalidArgumentError('a non-admin key must belong to a team', { field: 'teamId' });
  const generated = generateApiKey();
  const row = await db.apiKey.create({
    data: { admin: input.admin, teamId: input.teamId ?? null, name, prefix: generated.prefix, secretHash: generated.secretHash },
    select: { id: true },
  });
  return { id: row.id, key: generated.key, prefix: generated.prefix };
}

/**
 * Who a presented key belongs to. Malformed, unknown and revoked keys all
 * throw UnauthenticatedError; the messages differ for logs, and clients see
 * one fixed message whatever the reason.
 */
export async function authenticateApiKey(db: Db, presentedKey: string, options: AuthenticateOptions = {}): Promise<AuthenticatedKey> {
  const prefix = apiKeyPrefixOf(presentedKey);
  if (!prefix) throw new UnauthenticatedError('malformed API key');
  const presentedHash = hashApiKey(presentedKey);
  // Looking the row up by hash reveals nothing through timing: an attacker
  // cannot steer a SHA-256 towards a stored one. The explicit comparison
  // below is constant-time anyway, so this code stays safe if the lookup
  // ever changes (e.g. to a lookup by prefix).
  const row = await db.apiKey.findUnique({
    where: { secretHash: presentedHash },
    select: { id: true, admin: true, teamId: true, prefix: true, secretHash: true, revokedAt: true, lastUsedAt: true },
  });
  if (!row || !sameHash(row.secretHash, presentedHash) || row.prefix !== prefix) throw new UnauthenticatedError('unknown API key');
  if (row.revokedAt) throw new UnauthenticatedError('revoked API key');

  const now = (options.now ?? (() => new Date()))();
  const staleBefore = new Date(now.getTime() - LAST_USED_RESOLUTION_MS);
  if (!row.lastUsedAt || row.lastUsedAt < staleBefore) {
    // Conditional, so gateways authenticating the same key at once write once.
    await db.apiKey.updateMany({
      where: { id: row.id, OR: [{ lastUsedAt: null }, { lastUsedAt: { lt: staleBefore } }] },
      data: { lastUsedAt: now },
    });
  }
  return { keyId: row.id, admin: row.admin, teamId: row.teamId };
}

/** Revokes a key; revoking a revoked key changes nothing. Returns whether the key exists. */
export async function revokeApiKey(db: Db, keyId: string, now = new Date()): Promise<boolean> {
  const updated = await db.apiKey.updateMany({ where: { id: keyId, revokedAt: null }, data: { revokedAt: now } });
  if (updated.count > 0) return true;
  return (await db.apiKey.count({ where: { id: keyId } })) > 0;
}
