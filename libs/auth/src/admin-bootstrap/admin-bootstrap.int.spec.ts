import { createPrismaClient } from '@corral/db';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { authenticateApiKey, issueApiKey, revokeApiKey } from '../api-keys/api-keys';
import { BOOTSTRAP_ADMIN_KEY_NAME, ensureFirstAdminKey, reissueAdminKey } from './admin-bootstrap';


describeWithDatabase('admin key bootstrap (Postgres)', () => {
  let db: TestDatabase;

  beforeEach(async () => {
    db = await createTestDatabase();
  });
  afterEach(() => db.drop());

  it('creates the first admin key once, even when gateways start together', async () => {
    // Separate clients, as separate gateway processes would have.
    const gateways = [db.prisma, createPrismaClient(db.url), createPrismaClient(db.url), createPrismaClient(db.url)];
    try {
      const results = await Promise.all(gateways.flatMap((prisma) => [ensureFirstAdminKey(prisma), ensureFirstAdminKey(prisma)]));
      const created = results.filter((r) => r !== undefined);
      expect(created).toHaveLength(1);
      expect(await db.prisma.apiKey.count({ where: { admin: true } })).toBe(1);
      expect(await authenticateApiKey(db.prisma, created[0]?.key ?? '')).toMatchObject({ admin: true, teamId: null });
      expect(await ensureFirstAdminKey(db.prisma)).toBeUndefined();
    } finally {
      await Promise.all(gateways.slice(1).map((p) => p.$disconnect()));
    }
  });

  it('does not make a new one after every admin key was revoked', async () => {
    const first = await ensureFirstAdminKey(db.prisma);
    expect(first).toBeDefined();
    await revokeApiKey(db.prisma, first?.id ?? '');
    expect(await ensureFirstAdminKey(db.prisma)).toBeUndefined();
  });

  it('reissues: revokes the bootstrap admin keys, keeps other admin keys, and the new key works', async () => {
    const first = await ensureFirstAdminKey(db.prisma);
    expect(first).toBeDefined();
    const ops = await issueApiKey(db.prisma, { admin: true, name: 'ops-team' });
    const reissued = await reissueAdminKey(db.prisma);
    expect(reissued.revoked).toBe(1);
    await expect(authenticateApiKey(db.prisma, first?.key ?? '')).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    expect(await authenticateApiKey(db.prisma, reissued.key)).toMatchObject({ keyId: reissued.id, admin: true });
    expect(await authenticateApiKey(db.prisma, ops.key)).toMatchObject({ keyId: ops.id, admin: true });
    expect(await db.prisma.apiKey.count({ where: { name: BOOTSTRAP_ADMIN_KEY_NAME, revokedAt: null } })).toBe(1);
  });

  it('reissues on a database that never had an admin key', async () => {
    const reissued = await reissueAdminKey(db.prisma);
    expect(reissued.revoked).toBe(0);
    expect(await ensureFirstAdminKey(db.prisma)).toBeUndefined();
  });
});
