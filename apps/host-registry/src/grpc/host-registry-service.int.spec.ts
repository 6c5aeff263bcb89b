import { createPublicKey } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { createClient, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { hostRegistryV1 } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { REFRESH_REFUSED } from '../credentials/host-credentials';
import { HOST_TOKEN_AUDIENCE, HOST_TOKEN_ISSUER } from '../credentials/host-tokens';
import { REGISTRATION_REFUSED } from '../registration/registration-tokens';
import { hostRegistryService } from './host-registry-service';

// The RPCs end to end over gRPC: what the proto carries, and that refusals
// arrive as UNAUTHENTICATED with their one message.
describeWithDatabase('host-registry gRPC: tokens, registration, refresh, JWKS', () => {
  let db: TestDatabase;
  let server: RunningGrpcServer;
  let client: PromiseClient<hostRegistryV1.HostRegistryServiceClient>;

  beforeAll(async () => {
    db = await createTestDatabase();
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: hostRegistryV1.HostRegistryServiceService,
          implementation: hostRegistryService({
            prisma: db.prisma,
            logger: silentLogger,
            credentials: { secret: 'g'.repeat(32), ttlSeconds: 900, retryWindowSeconds: 30 },
            registrationTokenDefaultTtlSeconds: 3600,
          }),
        },
      ],
    });
    client = createClient(hostRegistryV1.HostRegistryServiceClient, server.address);
  });
  afterAll(async () => {
    client?.close();
    await server?.stop();
    await db?.drop();
  });

  const registration = (token: string, name: string, labels: Record<string, string> = {}) => ({
    registrationToken: token,
    name,
    agentAddress: '127.0.0.1:50060',
    capacity: { cpuMillis: 1000, memoryMb: 512, diskMb: 1024 },
    drivers: [],
    labels,
  });

  it('creates a scoped token, refuses a host outside it, registers one inside with a refresh token, and refreshes', async () => {
    const created = await client.createRegistrationToken({ ttlSeconds: 0, teamId: '', description: 'web', scope: { namePattern: 'web-*', labels: { zone: 'a' } } });
    await expect(client.registerHost(registration(created.token, 'db-1', { zone: 'a' }))).rejects.toMatchObject({ name: 'UnauthenticatedError', message: REGISTRATION_REFUSED });

    const registered = await client.registerHost(registration(created.token, 'web-1', { zone: 'a' }));
    expect(registered.refreshToken).toMatch(/^crr_/);
    expect(registered.refreshTokenExpiresAt).toBeInstanceOf(Date);

    const refreshed = await client.refreshHostCredentials({ refreshToken: registered.refreshToken });
    expect(refreshed).toMatchObject({ hostId: registered.hostId, refreshToken: expect.stringMatching(/^crr_/) });
    expect(refreshed.refreshToken).not.toBe(registered.refreshToken);
    // A retry (lost answer) gets the same pair.
    expect(await client.refreshHostCredentials({ refreshToken: registered.refreshToken })).toEqual(refreshed);
    await expect(client.refreshHostCredentials({ refreshToken: 'crr_nope' })).rejects.toMatchObject({ name: 'UnauthenticatedError', message: REFRESH_REFUSED });

    // Anyone can verify the host token with the JWKS alone.
    const jwks = await client.getJwks({});
    expect(jwks).toMatchObject({ issuer: HOST_TOKEN_ISSUER, audience: HOST_TOKEN_AUDIENCE });
    const kid = jwt.decode(refreshed.hostToken, { complete: true })?.header.kid;
    const jwk = jwks.keys.find((k) => k.kid === kid);
    expect(jwk).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
    const publicKey = createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk?.x, y: jwk?.y }, format: 'jwk' });
    expect(jwt.verify(refreshed.hostToken, publicKey, { algorithms: ['ES256'], issuer: jwks.issuer, audience: jwks.audience })).toMatchObject({
      sub: registered.hostId,
    });
  });

  it('lists and revokes tokens over gRPC', async () => {
    const team = await db.prisma.team.create({ data: { name: 'grpc-team' } });
    const created = await client.createRegistrationToken({ ttlSeconds: 600, teamId: team.id, description: 'byoc', scope: undefined });
    const listed = await client.listRegistrationTokens({ teamId: team.id });
    expect(listed.tokens).toEqual([
      {
        id: created.id,
        description: 'byoc',
        teamId: team.id,
        createdAt: expect.any(Date),
        expiresAt: created.expiresAt,
        usedAt: undefined,
        usedByHostId: '',
        revokedAt: undefined,
        scope: { namePattern: '', labels: {} },
      },
    ]);
    const revoked = await client.revokeRegistrationToken({ id: created.id, teamId: team.id });
    expect(revoked.token?.revokedAt).toBeInstanceOf(Date);
    expect((await client.revokeRegistrationToken({ id: created.id, teamId: team.id })).token?.revokedAt).toEqual(revoked.token?.revokedAt);
    await expect(client.revokeRegistrationToken({ id: created.id, teamId: 'another-team' })).rejects.toMatchObject({ name: 'NotFoundError' });
    await expect(client.registerHost(registration(created.token, 'byoc-1'))).rejects.toMatchObject({ message: REGISTRATION_REFUSED });
  });
});
