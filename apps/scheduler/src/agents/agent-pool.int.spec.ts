import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlPlaneOnly, implementUnary, loadAgentTlsMaterial, mutualTlsServerCredentials, RotatingCertificateProvider, startGrpcServer, type RunningGrpcServer, type TlsMaterial } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { CertificateAuthority, createCertificateAuthority, createCertificateRequest, generateKeyPair, type TlsIdentity } from '@corral/pki';
import { agentV1 } from '@corral/proto';
import { loadSchedulerConfig } from '../config';
import { AgentPool } from './agent-pool';

// The scheduler's side of mutual TLS: a real TLS agent stand-in (only the
// control plane may call it) and the pool holding the scheduler's
// certificate, loaded from files the way AGENT_TLS_* name them.
describe('AgentPool over mutual TLS', () => {
  let ca: CertificateAuthority;
  let dir: string;
  let agent: RunningGrpcServer;
  const target = { id: 'pool-host-1', agentAddress: '' };

  async function material(identity: TlsIdentity): Promise<TlsMaterial> {
    const keys = generateKeyPair();
    const issued = await ca.issue({ csrPem: await createCertificateRequest(keys.privateKeyPem, 'x'), identity, usages: ['server', 'client'], validForSeconds: 3600, now: new Date() });
    return { caCertificatePem: ca.certificatePem, certificatePem: issued.certificatePem, privateKeyPem: keys.privateKeyPem };
  }

  beforeAll(async () => {
    ca = await CertificateAuthority.load(await createCertificateAuthority());
    dir = mkdtempSync(join(tmpdir(), 'corral-pool-tls-'));
    agent = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      credentials: mutualTlsServerCredentials(new RotatingCertificateProvider(await material({ kind: 'host', hostId: target.id }))),
      interceptors: [controlPlaneOnly()],
      services: [
        {
          definition: agentV1.NodeAgentServiceService,
          implementation: implementUnary(agentV1.NodeAgentServiceService, { listWorkloads: async () => ({ workloads: [] }) }, silentLogger),
        },
      ],
    });
    target.agentAddress = agent.address;
  });
  afterAll(async () => {
    await agent?.stop(100);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const filesFor = (m: TlsMaterial, name: string) => {
    writeFileSync(join(dir, `${name}-ca.pem`), m.caCertificatePem);
    writeFileSync(join(dir, `${name}.pem`), m.certificatePem);
    writeFileSync(join(dir, `${name}-key.pem`), m.privateKeyPem, { mode: 0o600 });
    return { AGENT_TLS_CA_FILE: join(dir, `${name}-ca.pem`), AGENT_TLS_CERT_FILE: join(dir, `${name}.pem`), AGENT_TLS_KEY_FILE: join(dir, `${name}-key.pem`) };
  };
  const env = { DATABASE_URL: 'postgres://x@127.0.0.1/x', NATS_URL: 'nats://127.0.0.1:4222' };

  it('calls the agent with the scheduler certificate, holding it to the host id it was asked for', async () => {
    const config = loadSchedulerConfig({ ...env, ...filesFor(await material({ kind: 'control-plane', service: 'scheduler' }), 'scheduler') });
    const pool = new AgentPool({ deadlineMs: 5000, tls: loadAgentTlsMaterial(config) });
    try {
      expect(pool.mutualTls).toBe(true);
      await expect(pool.get(target).listWorkloads({})).resolves.toEqual({ workloads: [] });
      // Same address, another host id: the agent there cannot prove it is that host.
      await expect(pool.get({ id: 'pool-host-2', agentAddress: target.agentAddress }).listWorkloads({})).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      // An address without a host id is refused before dialling.
      expect(() => pool.get({ id: '', agentAddress: target.agentAddress })).toThrow(expect.objectContaining({ name: 'FailedPreconditionError' }));
      // One channel per host and address; eviction by address drops them all.
      expect(pool.get(target)).toBe(pool.get(target));
      const before = pool.get(target);
      pool.evict(target.agentAddress);
      expect(pool.get(target)).not.toBe(before);
    } finally {
      pool.closeAll();
    }
  });

  it("is refused by the agent when it holds a host's certificate instead of a control-plane one", async () => {
    const pool = new AgentPool({ deadlineMs: 5000, tls: await material({ kind: 'host', hostId: 'pool-host-9' }) });
    try {
      await expect(pool.get(target).listWorkloads({})).rejects.toMatchObject({ name: 'PermissionDeniedError' });
    } finally {
      pool.closeAll();
    }
  });

  it('without AGENT_TLS_* calls in plaintext, which the TLS agent refuses', async () => {
    const pool = new AgentPool({ deadlineMs: 5000, tls: loadAgentTlsMaterial(loadSchedulerConfig(env)) });
    try {
      expect(pool.mutualTls).toBe(false);
      await expect(pool.get(target).listWorkloads({})).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    } finally {
      pool.closeAll();
    }
  });

  it('needs all three AGENT_TLS_* variables or none, and names a file it cannot read', () => {
    expect(() => loadSchedulerConfig({ ...env, AGENT_TLS_CERT_FILE: '/x.pem' })).toThrow(/AGENT_TLS_CA_FILE, AGENT_TLS_KEY_FILE are required/);
    const config = loadSchedulerConfig({ ...env, AGENT_TLS_CA_FILE: join(dir, 'nope.pem'), AGENT_TLS_CERT_FILE: '/x.pem', AGENT_TLS_KEY_FILE: '/y.pem' });
    expect(() => loadAgentTlsMaterial(config)).toThrow(/AGENT_TLS_CA_FILE: cannot read/);
  });
});
