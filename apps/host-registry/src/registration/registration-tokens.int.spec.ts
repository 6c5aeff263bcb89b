import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { registerHost, type RegisterHostInput } from '../hosts/host-inventory';
import { createRegistrationToken, listRegistrationTokens, REGISTRATION_REFUSED, revokeRegistrationToken } from './registration-tokens';

const policy = { secret: 's'.repeat(40), ttlSeconds: 900 };
const now = () => new Date();

const input = (token: string, name: string, labels: Record<string, string> = {}): RegisterHostInput => ({
  registrationToken: token,
  name,
  agentAddress: '127.0.0.1:50060',
  capacity: { cpuMillis: 1000, memoryMb: 1024, diskMb: 1024 },
  drivers: [],
  labels,
});

describeWithDatabase('registration tokens: scope, listing, revocation', () => {
  let db: TestDatabase;
  let teamA: string;
  let teamB: string;
  beforeAll(async () => {
    db = await createTestDatabase();
    teamA = (await db.prisma.team.create({ data: { name: 'team-a' } })).id;
    teamB = (await db.prisma.team.create({ data: { name: 'team-b' } })).id;
  });
  afterAll(() => db.drop());

  const tokenRow = (id: string) => db.prisma.registrationToken.findUniqueOrThrow({ where: { id } });

  it('refuses a host outside the scope like any bad token, leaves the token unused, and accepts one inside', async () => {
    const issued = await createRegistrationToken(
      db.prisma,
      { ttlSeconds: 600, description: 'web fleet', scope: { namePattern: 'web-*', labels: { zone: 'eu-1', tier: 'edge' } } },
      now(),
    );
    const outside: [string, Record<string, string>][] = [
      ['db-1', { zone: 'eu-1', tier: 'edge' }],
      ['web-1', { zone: 'eu-2', tier: 'edge' }],
      ['web-1', { zone: 'eu-1' }],
      ['web-1', {}],
    ];
    for (const [name, labels] of outside) {
      await expect(registerHost(db.prisma, input(issued.token, name, labels), policy, now())).rejects.toMatchObject({
        name: 'UnauthenticatedError',
        message: REGISTRATION_REFUSED,
      });
    }
    expect(await tokenRow(issued.id)).toMatchObject({ usedAt: null, usedByHostId: null });
    expect(await db.prisma.host.count()).toBe(0);

    const { hostId } = await registerHost(db.prisma, input(issued.token, 'WEB-7', { zone: 'eu-1', tier: 'edge', rack: 'r9' }), policy, now());
    expect(await tokenRow(issued.id)).toMatchObject({ usedByHostId: hostId });
    await expect(registerHost(db.prisma, input(issued.token, 'web-8', { zone: 'eu-1', tier: 'edge' }), policy, now())).rejects.toMatchObject({
      message: REGISTRATION_REFUSED,
    });
  });

  it('refuses an expired token even for a host inside its scope', async () => {
    const expired = await createRegistrationToken(db.prisma, { ttlSeconds: 60, description: 'old', scope: { namePattern: 'web-*' } }, new Date(Date.now() - 120_000));
    await expect(registerHost(db.prisma, input(expired.token, 'web-9'), policy, now())).rejects.toMatchObject({ message: REGISTRATION_REFUSED });
    expect(await tokenRow(expired.id)).toMatchObject({ usedAt: null });
  });

  it('refuses a malformed scope at creation, naming the field', async () => {
    await expect(createRegistrationToken(db.prisma, { ttlSeconds: 600, description: '', scope: { namePattern: 'web-[0-9]' } }, now())).rejects.toMatchObject({
      name: 'InvalidArgumentError',
      field: 'scope.namePattern',
    });
  });

  it("lists a team's own tokens with their state and scope, never a secret or hash; all tokens for an admin", async () => {
    const a1 = await createRegistrationToken(db.prisma, { ttlSeconds: 600, teamId: teamA, description: 'a1', scope: { labels: { byoc: 'yes' } } }, new Date(Date.now() - 1000));
    const a2 = await createRegistrationToken(db.prisma, { ttlSeconds: 600, teamId: teamA, description: 'a2' }, now());
    const b1 = await createRegistrationToken(db.prisma, { ttlSeconds: 600, teamId: teamB, description: 'b1' }, now());
    const { hostId } = await registerHost(db.prisma, input(a1.token, 'byoc-a', { byoc: 'yes' }), policy, now());

    const listed = await listRegistrationTokens(db.prisma, teamA);
    expect(listed.map((t) => t.id)).toEqual([a2.id, a1.id]);
    expect(listed[1]).toEqual({
      id: a1.id,
      description: 'a1',
      teamId: teamA,
      createdAt: expect.any(Date),
      expiresAt: a1.expiresAt,
      usedAt: expect.any(Date),
      usedByHostId: hostId,
      revokedAt: null,
      scope: { namePattern: null, labels: { byoc: 'yes' } },
    });
    const text = JSON.stringify(await listRegistrationTokens(db.prisma));
    for (const secret of [a1.token, a2.token, b1.token]) expect(text).not.toContain(secret);
    expect(text).not.toMatch(/tokenHash|[0-9a-f]{64}/);
    expect((await listRegistrationTokens(db.prisma)).map((t) => t.id)).toEqual(expect.arrayContaining([a1.id, a2.id, b1.id]));
    expect((await listRegistrationTokens(db.prisma, teamB)).map((t) => t.id)).toEqual([b1.id]);
  });

  it("revokes idempotently, refuses the revoked token, and hides other teams' tokens as not found", async () => {
    const issued = await createRegistrationToken(db.prisma, { ttlSeconds: 600, teamId: teamA, description: 'to revoke' }, now());
    const first = await revokeRegistrationToken(db.prisma, { id: issued.id, teamId: teamA }, new Date(Date.now() - 10));
    expect(first.revokedAt).toBeInstanceOf(Date);
    const again = await revokeRegistrationToken(db.prisma, { id: issued.id, teamId: teamA }, now());
    expect(again.revokedAt).toEqual(first.revokedAt);
    await expect(registerHost(db.prisma, input(issued.token, 'after-revoke'), policy, now())).rejects.toMatchObject({ message: REGISTRATION_REFUSED });

    const other = await createRegistrationToken(db.prisma, { ttlSeconds: 600, teamId: teamB, description: 'b' }, now());
    const platform = await createRegistrationToken(db.prisma, { ttlSeconds: 600, description: 'platform' }, now());
    for (const id of [other.id, platform.id, '00000000-0000-0000-0000-000000000000', 'not-an-id']) {
      await expect(revokeRegistrationToken(db.prisma, { id, teamId: teamA }, now())).rejects.toMatchObject({ name: 'NotFoundError' });
    }
    expect(await tokenRow(other.id)).toMatchObject({ revokedAt: null });
    expect(await tokenRow(platform.id)).toMatchObject({ revokedAt: null });
    // The platform admin (no team) may revoke any token.
    expect((await revokeRegistrationToken(db.prisma, { id: other.id }, now())).revokedAt).toBeInstanceOf(Date);
  });
});
