import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { authenticateHost } from '../credentials/host-credentials';
import { createRegistrationToken, REGISTRATION_REFUSED } from '../registration/registration-tokens';
import { sha256Hex } from '../registration/secrets';
import { getHost, listHosts, registerHost, type RegisterHostInput } from './host-inventory';

const SECRET = 'x'.repeat(48);
const policy = { secret: SECRET, ttlSeconds: 3600 };
const now = () => new Date();

const input = (token: string, name = 'node-1'): RegisterHostInput => ({
  registrationToken: token,
  name,
  agentAddress: '127.0.0.1:50060',
  capacity: { cpuMillis: 2000, memoryMb: 4096, diskMb: 10_000 },
  drivers: [{ name: 'process', healthy: true, version: '1', detail: '' }],
  labels: { zone: 'a' },
});

describeWithDatabase('host registration', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db.drop());

  it('registers a host with a token, stores only hashes, and issues a verifiable credential', async () => {
    const issued = await createRegistrationToken(db.prisma, { ttlSeconds: 600, description: 'first' }, now());
    const { hostId, credential } = await registerHost(db.prisma, input(issued.token), policy, now());
    expect((await authenticateHost(db.prisma, policy, credential.token, now())).hostId).toBe(hostId);
    const row = await db.prisma.registrationToken.findUniqueOrThrow({ where: { id: issued.id } });
    expect(row.tokenHash).toBe(sha256Hex(issued.token));
    expect(row.usedByHostId).toBe(hostId);
    const host = await getHost(db.prisma, hostId);
    expect(host).toMatchObject({ name: 'node-1', status: 'online', credentialHash: sha256Hex(credential.token), labels: { zone: 'a' } });
    expect(JSON.stringify(await db.prisma.registrationToken.findMany())).not.toContain(issued.token);
  });

  it('lets exactly one of 100 concurrent registrations with one token succeed', async () => {
    const issued = await createRegistrationToken(db.prisma, { ttlSeconds: 600, description: 'race' }, now());
    const results = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => registerHost(db.prisma, input(issued.token, `race-${i}`), policy, now())));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ name: 'UnauthenticatedError', message: REGISTRATION_REFUSED });
    expect(await db.prisma.host.count({ where: { name: { startsWith: 'race-' } } })).toBe(1);
  });

  it('refuses expired, revoked and unknown tokens with one message and creates nothing', async () => {
    const expired = await createRegistrationToken(db.prisma, { ttlSeconds: 60, description: 'old' }, new Date(Date.now() - 3600_000));
    const revoked = await createRegistrationToken(db.prisma, { ttlSeconds: 600, description: 'revoked' }, now());
    await db.prisma.registrationToken.update({ where: { id: revoked.id }, data: { revokedAt: now() } });
    const before = await db.prisma.host.count();
    for (const token of [expired.token, revoked.token, 'crt_unknown']) {
      await expect(registerHost(db.prisma, input(token, 'nope'), policy, now())).rejects.toMatchObject({ name: 'UnauthenticatedError', message: REGISTRATION_REFUSED });
    }
    expect(await db.prisma.host.count()).toBe(before);
  });

  it('validates registration fields by name before using the token', async () => {
    const issued = await createRegistrationToken(db.prisma, { ttlSeconds: 600, description: 'valid' }, now());
    await expect(registerHost(db.prisma, { ...input(issued.token), agentAddress: 'nonsense' }, policy, now())).rejects.toMatchObject({ field: 'agentAddress' });
    // The token is still usable: nothing was half-applied.
    await expect(registerHost(db.prisma, input(issued.token, 'after-bad-input'), policy, now())).resolves.toBeDefined();
  });

  it('refuses a TTL out of range naming the field', async () => {
    await expect(createRegistrationToken(db.prisma, { ttlSeconds: 5, description: '' }, now())).rejects.toMatchObject({ field: 'ttlSeconds' });
  });

  it("shows a team its own hosts and platform hosts, and hides other teams' hosts", async () => {
    const [a, b] = await Promise.all([db.prisma.team.create({ data: { name: 'team-a' } }), db.prisma.team.create({ data: { name: 'team-b' } })]);
    const tokenA = await createRegistrationToken(db.prisma, { ttlSeconds: 600, teamId: a.id, description: 'byoc a' }, now());
    const tokenB = await createRegistrationToken(db.prisma, { ttlSeconds: 600, teamId: b.id, description: 'byoc b' }, now());
    const hostA = await registerHost(db.prisma, input(tokenA.token, 'byoc-a'), policy, now());
    const hostB = await registerHost(db.prisma, input(tokenB.token, 'byoc-b'), policy, now());
    const visibleToA = (await listHosts(db.prisma, a.id)).map((h) => h.id);
    expect(visibleToA).toContain(hostA.hostId);
    expect(visibleToA).not.toContain(hostB.hostId);
    expect((await listHosts(db.prisma)).map((h) => h.id)).toEqual(expect.arrayContaining([hostA.hostId, hostB.hostId]));
    await expect(getHost(db.prisma, hostB.hostId, a.id)).rejects.toMatchObject({ name: 'NotFoundError' });
  });
});
