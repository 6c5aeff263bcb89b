import type { PrismaClient } from '@corral/db';
import { issueApiKey, type Db, type IssuedApiKey } from '../api-keys/api-keys';

// The first admin key, made when a fresh installation starts (like Vault's
// root token), and its recovery path for an operator who lost it.

export const BOOTSTRAP_ADMIN_KEY_NAME = 'bootstrap-admin';

// Serialises every change to the bootstrap key across all gateways sharing
// the database. A transaction-scoped lock, so it is released by commit or
// rollback and never leaks with a pooled connection.
const BOOTSTRAP_LOCK_KEY = 0x636f72726c01n; // "corrl" + 1

const TRANSACTION_LIMITS = { maxWait: 10_000, timeout: 20_000 };

async function lockBootstrap(tx: Db): Promise<void> {
  await tx.$executeRaw`SELECT pg_advisory_xact_lock(${BOOTSTRAP_LOCK_KEY})`;
}

/**
 * Issues the first admin key if no admin key was ever issued, and returns
 * it; otherwise returns undefined. Safe when several gateways start at once:
 * they queue on a lock, and only the first finds no admin key. Revoked admin
 * keys count as issued, so revoking every admin key does not make the next
 * restart print a fresh one: `corral admin reissue-key` is the way back.
 */
export async function ensureFirstAdminKey(prisma: PrismaClient): Promise<IssuedApiKey | undefined> {
  return prisma.$transaction(async (tx) => {
    await lockBootstrap(tx);
    const existing = await tx.apiKey.findFirst({ where: { admin: true }, select: { id: true } });
    if (existing) return undefined;
    return issueApiKey(tx, { admin: true, name: BOOTSTRAP_ADMIN_KEY_NAME });
  }, TRANSACTION_LIMITS);
}

export interface ReissuedAdminKey extends IssuedApiKey {
  /** How many earlier bootstrap admin keys this revoked. */
  revoked: number;
}

/**
 * Revokes every live admin key named "bootstrap-admin" and issues a new one,
 * in one transaction: there is never a moment with neither, nor with both.
 * Admin keys issued under other names are left alone.
 */
export async function reissueAdminKey(prisma: PrismaClient, now = new Date()): Promise<ReissuedAdminKey> {
  return prisma.$transaction(async (tx) => {
    await lockBootstrap(tx);
    const revoked = await tx.apiKey.updateMany({
      where: { admin: true, name: BOOTSTRAP_ADMIN_KEY_NAME, revokedAt: null },
      data: { revokedAt: now },
    });
    const issued = await issueApiKey(tx, { admin: true, name: BOOTSTRAP_ADMIN_KEY_NAME });
    return { ...issued, revoked: revoked.count };
  }, TRANSACTION_LIMITS);
}
