import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlPlaneOnly, implementUnary, loadAgentTlsMaterial, mutualTlsServerCredentials, RotatingCertificateProvider, startGrpcServer, type RunningGrpcServer, type TlsMaterial } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { CertificateAuthority, createCertificateAuthority, createCertificateRequest, generateKeyPair, type TlsIdentity } from '@corral/pki';
import { agentV1 } from '@corral/proto';
import { loadSchedulerConfig } from '../config';
import { AgentPool } from './agent-pool';

// The scheduler's certificate files re-issued while it runs: the pool calls
// agents with the new certificate from the next call on, without a restart
// (a real TLS agent stand-in that only the control plane may call tells the
// two certificates apart: it refuses a host's certificate).
describe('AgentPool picks up re-issued AGENT_TLS_* files', () => {
  let ca: CertificateAuthority;
  let dir: string;
  let agent: RunningGrpcServer;
  const target = { id: 'rotation-host-1', agentAddress: '' };
  const env = { DATABASE_URL: 'postgres://x@127.0.0.1/x', NATS_URL: 'nats://127.0.0.1:4222' };

  async function material(identity: TlsIdentity): Promise<TlsMaterial> {
    const keys = generateKeyPair();
    const issued = await ca.issue({ csrPem: await createCertificateRequest(keys.privateKeyPem, 'x'), identity, usages: ['server', 'client'], validForSeconds: 3600, now: new Date() });
    return { caCertificatePem: ca.certificatePem, certificatePem: issued.certificatePem, privateKeyPem: keys.privateKeyPem };
  }
  const paths = () => ({ AGENT_TLS_CA_FILE: join(dir, 'ca.pem'), AGENT_TLS_CERT_FILE: join(dir, 'scheduler.pem'), AGENT_TLS_KEY_FILE: join(dir, 'scheduler-key.pem') });
  const put = (path: string, content: string) => {
    writeFileSync(`${path}.tmp`, content, { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  };
  const write = (m: TlsMaterial, only?: 'key') => {
    const p = paths();
    put(p.AGENT_TLS_CA_FILE, m.caCertificatePem);
    put(p.AGENT_TLS_KEY_FILE, m.privateKeyPem);
    if (only !== 'key') put(p.AGENT_TLS_CERT_FILE, m.certificatePem);
  };

  beforeAll(async () => {
    ca = await CertificateAuthority.load(await createCertificateAuthority());
    dir = mkdtempSync(join(tmpdir(), 'corral-pool-rotation-'));
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

  it('calls with the re-issued certificate from the next call on, and ignores a half-written set', async () => {
    // Wrongly issued first (a host's certificate, which agents refuse)...
    write(await material({ kind: 'host', hostId: 'not-the-control-plane' }));
    const pool = new AgentPool({ deadlineMs: 5000, tls: loadAgentTlsMaterial(loadSchedulerConfig({ ...env, ...paths() }), { recheckMs: 0 }) });
    try {
      await expect(pool.get(target).listWorkloads({})).rejects.toMatchObject({ name: 'PermissionDeniedError' });
      const refusedClient = pool.get(target);

      // ...then re-issued as the scheduler's, but only the key is written yet: nothing changes.
      const scheduler = await material({ kind: 'control-plane', service: 'scheduler' });
      write(scheduler, 'key');
      expect(pool.get(target)).toBe(refusedClient);
      await expect(pool.get(target).listWorkloads({})).rejects.toMatchObject({ name: 'PermissionDeniedError' });

      // The certificate follows: the same pool, a new channel, accepted.
      write(scheduler);
      expect(pool.get(target)).not.toBe(refusedClient);
      await expect(pool.get(target).listWorkloads({})).resolves.toEqual({ workloads: [] });
      expect(pool.get(target)).toBe(pool.get(target));
    } finally {
      pool.closeAll();
    }
  });
});
