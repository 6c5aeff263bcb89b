import { UnauthenticatedError } from '@corral/domain';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { authenticateApiKey, issueApiKey, LAST_USED_RESOLUTION_MS, revokeApiKey } from './api-keys';
import { hashApiKey } from './key-format';


describeWithDatabase('API keys (Postgres)', () => {
  let db: TestDatabase;
  let teamId: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    teamId = (await db.prisma.team.create({ data: { name: 'team-a' } })).id;
  });
  afterAll(() => db.drop());

  it('issues a key whose secret is stored only as its hash', async () => {
    const issued = await issueApiKey(db.prisma, { admin: false, teamId, name: 'ci' });
    expect(issued.key).toMatch(/^crl_[A-Za-z0-9]{8}_[A-Za-z0-9]{43}$/);
    const row = await db.prisma.apiKey.findUniqueOrThrow({ where: { id: issued.id } });
    expect(row).toMatchObject({ teamId, admin: false, name: 'ci', prefix: issued.prefix, secretHash: hashApiKey(issued.key), revokedAt: null });
    const secret = issued.key.slice(issued.prefix.length + 1);
    expect(JSON.stringify(row)).not.toContain(secret);
  });

  it('authenticates team and admin keys', async () => {
    const team = await issueApiKey(db.prisma, { admin: false, teamId, name: 'team' });
    const admin = await issueApiKey(db.prisma, { admin: true, name: 'ops' });
    expect(await authenticateApiKey(db.prisma, team.key)).toEqual({ keyId: team.id, admin: false, teamId });
    expect(await authenticateApiKey(db.prisma, admin.key)).toEqual({ keyId: admin.id, admin: true, teamId: null });
  });

  it('refuses malformed, unknown and revoked keys', async () => {
    const issued = await issueApiKey(db.prisma, { admin: false, teamId, name: 'to-revoke' });
    const unknown = `${issued.prefix}_${'A'.repeat(43)}`;
    for (const bad of ['', 'garbage', `${issued.key}x`, unknown, `x${issued.key}`]) {
      await expect(authenticateApiKey(db.prisma, bad)).rejects.toBeInstanceOf(UnauthenticatedError);
    }
    expect(await revokeApiKey(db.prisma, issued.id)).toBe(true);
    expect(await revokeApiKey(db.prisma, issued.id)).toBe(true);
    await expect(authenticateApiKey(db.prisma, issued.key)).rejects.toThrow('revoked API key');
  });

  it('records use at most once a minute', async () => {
    const issued = await issueApiKey(db.prisma, { admin: false, teamId, name: 'busy' });
    const lastUsed = async () => (await db.prisma.apiKey.findUniqueOrThrow({ where: { id: issued.id } })).lastUsedAt;
    const t0 = new Date('2026-03-01T12:00:00Z');
    expect(await lastUsed()).toBeNull();
    await authenticateApiKey(db.prisma, issued.key, { now: () => t0 });
    expect(await lastUsed()).toEqual(t0);
    await authenticateApiKey(db.prisma, issued.key, { now: () => new Date(t0.getTime() + LAST_USED_RESOLUTION_MS - 1) });
    expect(await lastUsed()).toEqual(t0);
    const later = new Date(t0.getTime() + LAST_USED_RESOLUTION_MS + 1);
    await Promise.all([1, 2, 3].map(() => authenticateApiKey(db.prisma, issued.key, { now: () => later })));
    expect(await lastUsed()).toEqual(later);
  });

  it('refuses to issue a non-admin key without a team, or without a name', async () => {
    await expect(issueApiKey(db.prisma, { admin: false, name: 'orphan' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'teamId' });
    await expect(issueApiKey(db.prisma, { admin: true, name: '  ' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'name' });
  });
});
