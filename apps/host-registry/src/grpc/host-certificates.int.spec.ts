import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { createCertificateAuthority, createCertificateRequest, generateKeyPair, identitiesFromSubjectAltName } from '@corral/pki';
import { hostRegistryV1 } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { HostCertificateIssuer } from '../credentials/host-certificates';
import { hostRegistryService } from './host-registry-service';

// Hosts' mutual-TLS certificates over the real RPCs: the registry holds a CA
// loaded from files, the agent sends a CSR with registration and refresh.
describeWithDatabase('host-registry gRPC: host certificates from the internal CA', () => {
  let db: TestDatabase;
  let dir: string;
  let caPem: string;
  const servers: RunningGrpcServer[] = [];
  let client: PromiseClient<hostRegistryV1.HostRegistryServiceClient>;
  let withoutCa: PromiseClient<hostRegistryV1.HostRegistryServiceClient>;

  const serve = async (certificates?: HostCertificateIssuer) => {
    const server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: hostRegistryV1.HostRegistryServiceService,
          implementation: hostRegistryService({
            prisma: db.prisma,
            logger: silentLogger,
            credentials: { secret: 'c'.repeat(32), ttlSeconds: 900, retryWindowSeconds: 30 },
            registrationTokenDefaultTtlSeconds: 3600,
            certificates,
          }),
        },
      ],
    });
    servers.push(server);
    return createClient(hostRegistryV1.HostRegistryServiceClient, server.address);
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    dir = mkdtempSync(join(tmpdir(), 'corral-ca-'));
    const ca = await createCertificateAuthority();
    caPem = ca.certificatePem;
    writeFileSync(join(dir, 'ca.pem'), ca.certificatePem);
    writeFileSync(join(dir, 'ca-key.pem'), ca.privateKeyPem, { mode: 0o600 });
    const issuer = await HostCertificateIssuer.load({ certificateFile: join(dir, 'ca.pem'), privateKeyFile: join(dir, 'ca-key.pem') }, { validForSeconds: 86_400 });
    client = await serve(issuer);
    withoutCa = await serve(undefined);
  });
  afterAll(async () => {
    client?.close();
    withoutCa?.close();
    for (const server of servers) await server.stop();
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const token = async (on = client) => (await on.createRegistrationToken({ ttlSeconds: 0, teamId: '', description: 'tls', scope: undefined })).token;
  const registration = (registrationToken: string, name: string, csr?: string) => ({
    registrationToken,
    name,
    agentAddress: '127.0.0.1:50060',
    capacity: { cpuMillis: 1000, memoryMb: 512, diskMb: 1024 },
    drivers: [],
    labels: {},
    csr,
  });

  function expectHostCertificate(issued: hostRegistryV1.HostCertificate | undefined, hostId: string, publicKeyPem: string) {
    expect(issued).toBeDefined();
    const certificate = issued as hostRegistryV1.HostCertificate;
    const leaf = new X509Certificate(certificate.certificate);
    const root = new X509Certificate(certificate.caCertificate);
    expect(certificate.caCertificate).toBe(caPem);
    expect(leaf.checkIssued(root)).toBe(true);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(identitiesFromSubjectAltName(leaf.subjectAltName)).toEqual([{ kind: 'host', hostId }]);
    expect(leaf.subjectAltName).toContain('IP Address:127.0.0.1');
    // Server (the agent serves gRPC) and client usages.
    expect(leaf.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    expect(leaf.publicKey.export({ type: 'spki', format: 'pem' })).toBe(publicKeyPem);
    expect(certificate.expiresAt?.getTime()).toBe(new Date(leaf.validTo).getTime());
    return leaf;
  }

  it('issues the host a certificate for its id at registration, and renews it at every refresh', async () => {
    const keys = generateKeyPair();
    const csr = await createCertificateRequest(keys.privateKeyPem, 'the agent may say anything here');
    const registered = await client.registerHost(registration(await token(), 'tls-1', csr));
    const first = expectHostCertificate(registered.certificate, registered.hostId, keys.publicKeyPem);
    const lifetimeMs = new Date(first.validTo).getTime() - Date.now();
    expect(lifetimeMs).toBeGreaterThan(23 * 3600_000);
    expect(lifetimeMs).toBeLessThanOrEqual(24 * 3600_000);

    const refreshed = await client.refreshHostCredentials({ refreshToken: registered.refreshToken, csr });
    const renewed = expectHostCertificate(refreshed.certificate, registered.hostId, keys.publicKeyPem);
    expect(renewed.serialNumber).not.toBe(first.serialNumber);

    // Without a CSR the JWT pair is refreshed and no certificate issued.
    const plain = await client.refreshHostCredentials({ refreshToken: refreshed.refreshToken });
    expect(plain.hostId).toBe(registered.hostId);
    expect(plain.certificate).toBeUndefined();
  });

  it('refuses a garbage CSR naming `csr`, before spending the registration or refresh token', async () => {
    const registrationToken = await token();
    await expect(client.registerHost(registration(registrationToken, 'tls-2', 'garbage'))).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'csr' });
    const csr = await createCertificateRequest(generateKeyPair().privateKeyPem, 'x');
    const registered = await client.registerHost(registration(registrationToken, 'tls-2', csr));
    expect(registered.certificate).toBeDefined();

    await expect(client.refreshHostCredentials({ refreshToken: registered.refreshToken, csr: 'garbage' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'csr' });
    // The refresh token is unspent: it still refreshes (a spent one would be a reuse and revoke the family).
    await expect(client.refreshHostCredentials({ refreshToken: registered.refreshToken, csr })).resolves.toMatchObject({ hostId: registered.hostId });
  });

  it('issues nothing when the registry has no CA', async () => {
    const csr = await createCertificateRequest(generateKeyPair().privateKeyPem, 'x');
    const registered = await withoutCa.registerHost(registration(await token(withoutCa), 'tls-3', csr));
    expect(registered.hostToken).not.toBe('');
    expect(registered.certificate).toBeUndefined();
    expect((await withoutCa.refreshHostCredentials({ refreshToken: registered.refreshToken, csr })).certificate).toBeUndefined();
  });

  it('refuses to start with CA files that cannot be read or do not match, naming the variable', async () => {
    await expect(HostCertificateIssuer.load({ certificateFile: join(dir, 'missing.pem'), privateKeyFile: join(dir, 'ca-key.pem') }, { validForSeconds: 60 })).rejects.toThrow(
      /CORRAL_CA_CERT_FILE/,
    );
    writeFileSync(join(dir, 'other-key.pem'), generateKeyPair().privateKeyPem, { mode: 0o600 });
    await expect(HostCertificateIssuer.load({ certificateFile: join(dir, 'ca.pem'), privateKeyFile: join(dir, 'other-key.pem') }, { validForSeconds: 60 })).rejects.toThrow(
      /CORRAL_CA_KEY_FILE.*does not belong/,
    );
  });
});
