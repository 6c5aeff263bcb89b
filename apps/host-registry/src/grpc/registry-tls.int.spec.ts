import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedBroker, type EmbeddedBroker } from '@corral/events';
import { checkHealth, createClient, fetchPresentedRootCertificate, serverIdentityChannelCredentials } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { caCertificatePin, createCaFiles, identitiesFromSubjectAltName } from '@corral/pki';
import { hostRegistryV1 } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, freePort, type TestDatabase } from '@corral/testing';
import { loadHostRegistryConfig } from '../config';
import { startHostRegistry, type RunningHostRegistry } from '../host-registry';

// host-registry with the internal CA serves gRPC over TLS with a certificate
// it issued itself: callers without a certificate of their own reach it
// when they trust the CA and expect control-plane/host-registry; plaintext
// does not; a host given only the pin can check the CA from the handshake.
describeWithDatabase('host-registry serves TLS from its CA', () => {
  let db: TestDatabase;
  let broker: EmbeddedBroker;
  let dir: string;
  let registry: RunningHostRegistry;
  let caPem: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    broker = await startEmbeddedBroker({ host: '127.0.0.1', port: 0 });
    dir = mkdtempSync(join(tmpdir(), 'corral-registry-tls-'));
    const ca = await createCaFiles(dir);
    caPem = readFileSync(ca.certificateFile, 'utf8');
    registry = await startHostRegistry(
      loadHostRegistryConfig({
        DATABASE_URL: db.url,
        NATS_URL: broker.url,
        HOST_KEY_ENCRYPTION_KEY: 'k'.repeat(40),
        HOST_REGISTRY_GRPC_PORT: String(await freePort()),
        CORRAL_CA_CERT_FILE: ca.certificateFile,
        CORRAL_CA_KEY_FILE: ca.privateKeyFile,
        HOST_REGISTRY_TLS_NAMES: 'registry.corral.test',
      }),
      silentLogger,
    );
  });
  afterAll(async () => {
    await registry?.stop();
    await broker?.stop();
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers a caller that trusts the CA and holds no certificate', async () => {
    const client = createClient(hostRegistryV1.HostRegistryServiceClient, registry.address, {
      credentials: serverIdentityChannelCredentials(caPem, { kind: 'control-plane', service: 'host-registry' }),
    });
    try {
      const jwks = await client.getJwks({});
      expect(jwks.keys.length).toBeGreaterThan(0);
    } finally {
      client.close();
    }
  });

  it('refuses plaintext', async () => {
    await expect(checkHealth(registry.address, '', { deadlineMs: 2000 })).rejects.toMatchObject({ code: 14 /* UNAVAILABLE */ });
  });

  it('presents control-plane/host-registry with its names, and the CA in the chain for pinning', async () => {
    const root = await fetchPresentedRootCertificate(registry.address);
    expect(caCertificatePin(root)).toBe(caCertificatePin(caPem));
    const { connect } = await import('node:tls');
    const leaf = await new Promise<X509Certificate>((resolve, reject) => {
      const [host, port] = registry.address.split(':');
      const socket = connect({ host, port: Number(port), ca: caPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }, () => {
        const certificate = new X509Certificate(socket.getPeerCertificate().raw);
        socket.destroy();
        resolve(certificate);
      });
      socket.once('error', reject);
    });
    expect(identitiesFromSubjectAltName(leaf.subjectAltName)).toEqual([{ kind: 'control-plane', service: 'host-registry' }]);
    expect(leaf.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(leaf.subjectAltName).toContain('DNS:registry.corral.test');
  });
});
