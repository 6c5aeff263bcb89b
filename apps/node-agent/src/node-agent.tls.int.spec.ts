import { X509Certificate } from 'node:crypto';
import { statSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChannelCredentialsFactory, checkHealth, createClient, mutualTlsChannelCredentials, type ChannelCredentials, type TlsMaterial } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { CertificateAuthority, createCertificateAuthority, createCertificateRequest, generateKeyPair, type TlsIdentity } from '@corral/pki';
import { agentV1, hostRegistryV1 } from '@corral/proto';
import { eventually, freePort } from '@corral/testing';
import { loadNodeAgentConfig } from './config';
import { identityPath } from './identity/identity';
import { TLS_KEY_FILE } from './identity/tls-key';
import { startNodeAgent, type RunningNodeAgent } from './node-agent';

// The agent's gRPC server over real TLS on loopback, with certificates from a
// real internal CA handed out by a stand-in host registry (the real one's
// issuing is covered in host-registry; the launcher's e2e runs both).
describe('node agent serving mutual TLS', () => {
  jest.setTimeout(60_000);
  const HOST_ID = 'tls-host-1';
  let ca: CertificateAuthority;
  let stateDir: string;
  let agent: RunningNodeAgent;
  const refreshes: hostRegistryV1.RefreshHostCredentialsRequest[] = [];
  const issuedSerials: string[] = [];
  const hostIdentity: TlsIdentity = { kind: 'host', hostId: HOST_ID };

  async function issueFor(csr: string | undefined): Promise<hostRegistryV1.HostCertificate | undefined> {
    if (!csr) return undefined;
    const issued = await ca.issue({ csrPem: csr, identity: hostIdentity, ipAddresses: ['127.0.0.1'], usages: ['server', 'client'], validForSeconds: 3600, now: new Date() });
    issuedSerials.push(new X509Certificate(issued.certificatePem).serialNumber);
    return { certificate: issued.certificatePem, caCertificate: ca.certificatePem, expiresAt: issued.notAfter };
  }

  async function clientMaterial(identity: TlsIdentity, authority = ca): Promise<TlsMaterial> {
    const keys = generateKeyPair();
    const issued = await authority.issue({ csrPem: await createCertificateRequest(keys.privateKeyPem, 'x'), identity, usages: ['client', 'server'], validForSeconds: 3600, now: new Date() });
    return { caCertificatePem: authority.certificatePem, certificatePem: issued.certificatePem, privateKeyPem: keys.privateKeyPem };
  }

  const listWorkloads = (credentials: ChannelCredentials) => {
    const client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 5000, credentials });
    return client.listWorkloads({}).finally(() => client.close());
  };

  const startAgent = async (dir: string, issue: (csr: string | undefined) => Promise<hostRegistryV1.HostCertificate | undefined>, tokenTtlMs: number) => {
    const config = loadNodeAgentConfig({
      NATS_URL: 'nats://127.0.0.1:1',
      AGENT_GRPC_PORT: String(await freePort()),
      AGENT_STATE_DIR: dir,
      AGENT_REGISTRATION_TOKEN: 'crt_test',
      AGENT_NAME: 'tls-test',
    });
    return startNodeAgent(config, {
      logger: silentLogger,
      bus: { publish: () => undefined } as never,
      drivers: [],
      registerHost: async (request) => ({
        hostId: HOST_ID,
        hostToken: 'jwt-0',
        // Short, so the refresher renews (and re-issues the certificate) while the tests run.
        hostTokenExpiresAt: new Date(Date.now() + tokenTtlMs),
        refreshToken: 'crr_0',
        refreshTokenExpiresAt: new Date(Date.now() + 86_400_000),
        certificate: await issue(request.csr),
      }),
      refreshHostCredentials: async (request) => {
        refreshes.push(request);
        return {
          hostId: HOST_ID,
          hostToken: `jwt-${refreshes.length}`,
          hostTokenExpiresAt: new Date(Date.now() + 3600_000),
          refreshToken: `crr_${refreshes.length}`,
          refreshTokenExpiresAt: new Date(Date.now() + 86_400_000),
          certificate: await issue(request.csr),
        };
      },
    });
  };

  beforeAll(async () => {
    ca = await CertificateAuthority.load(await createCertificateAuthority());
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-tls-'));
    agent = await startAgent(join(stateDir, 'agent'), issueFor, 4000);
  });
  afterAll(async () => {
    await agent?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('registers with a CSR for a private key kept 0600 in the state dir, and keeps the certificate with the identity', () => {
    expect(agent.mutualTls).toBe(true);
    const keyPath = join(stateDir, 'agent', TLS_KEY_FILE);
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    const key = readFileSync(keyPath, 'utf8');
    expect(key).toContain('BEGIN PRIVATE KEY');
    const stored = readFileSync(identityPath(join(stateDir, 'agent')), 'utf8');
    expect(stored).toContain('BEGIN CERTIFICATE');
    expect(stored).not.toContain('PRIVATE KEY');
  });

  it('answers the control plane (a scheduler certificate) when it checks it reached this host', async () => {
    const scheduler = await clientMaterial({ kind: 'control-plane', service: 'scheduler' });
    await expect(listWorkloads(mutualTlsChannelCredentials(scheduler, hostIdentity))).resolves.toEqual({ workloads: [] });
    // The agent is not the host the client meant: the client refuses it.
    await expect(listWorkloads(mutualTlsChannelCredentials(scheduler, { kind: 'host', hostId: 'someone-else' }))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('refuses plaintext, a client without a certificate, and one from another CA at the handshake', async () => {
    await expect(listWorkloads(ChannelCredentialsFactory.createInsecure())).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(listWorkloads(ChannelCredentialsFactory.createSsl(Buffer.from(ca.certificatePem)))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    const otherCa = await CertificateAuthority.load(await createCertificateAuthority());
    const foreign = await clientMaterial({ kind: 'control-plane', service: 'scheduler' }, otherCa);
    await expect(listWorkloads(mutualTlsChannelCredentials({ ...foreign, caCertificatePem: ca.certificatePem }, hostIdentity))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it("refuses another host's certificate with PERMISSION_DENIED, but lets it probe health", async () => {
    const otherHost = await clientMaterial({ kind: 'host', hostId: 'tls-host-2' });
    await expect(listWorkloads(mutualTlsChannelCredentials(otherHost, hostIdentity))).rejects.toMatchObject({ name: 'PermissionDeniedError' });
    await expect(checkHealth(agent.address, '', { credentials: mutualTlsChannelCredentials(otherHost, hostIdentity) })).resolves.toBe('SERVING');
  });

  it('serves the certificate renewed with its credentials to new connections, without a restart', async () => {
    // The first token lives 4 s: the refresher renews at about 2/3 of that.
    const renewed = await eventually(() => (agent.credentials?.identity.hostToken === 'jwt-1' ? agent.credentials.identity : undefined), { timeoutMs: 30_000, what: 'a credential refresh' });
    expect(refreshes[0].csr).toContain('BEGIN CERTIFICATE REQUEST');
    expect(issuedSerials).toHaveLength(2);
    // Persisted before use.
    expect(JSON.parse(readFileSync(identityPath(join(stateDir, 'agent')), 'utf8')).tls.certificatePem).toBe(renewed.tls?.certificatePem);

    const scheduler = await clientMaterial({ kind: 'control-plane', service: 'scheduler' });
    const served: string[] = [];
    const watching = ChannelCredentialsFactory.createSsl(Buffer.from(ca.certificatePem), Buffer.from(scheduler.privateKeyPem), Buffer.from(scheduler.certificatePem), {
      checkServerIdentity: (_host, certificate) => {
        served.push(certificate.serialNumber);
        return undefined;
      },
    });
    await expect(listWorkloads(watching)).resolves.toEqual({ workloads: [] });
    expect(served).toEqual([issuedSerials[1]]);
  });

  it('restarts serving the stored certificate, with mutual TLS from its first connection', async () => {
    await agent.stop();
    agent = await startAgent(join(stateDir, 'agent'), issueFor, 3600_000);
    expect(agent.mutualTls).toBe(true);
    const scheduler = await clientMaterial({ kind: 'control-plane', service: 'scheduler' });
    await expect(listWorkloads(mutualTlsChannelCredentials(scheduler, hostIdentity))).resolves.toEqual({ workloads: [] });
    await expect(listWorkloads(ChannelCredentialsFactory.createInsecure())).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('serves plaintext, with a warning, when the registry has no CA to issue a certificate', async () => {
    const plain = await startAgent(join(stateDir, 'no-ca'), async () => undefined, 3600_000);
    try {
      expect(plain.mutualTls).toBe(false);
      await expect(checkHealth(plain.address, '', { deadlineMs: 5000 })).resolves.toBe('SERVING');
    } finally {
      await plain.stop();
    }
  });
});
