import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadAgentTlsMaterial, type TlsMaterial } from '@corral/grpc';
import { CertificateAuthority, createCertificateAuthority, createCertificateRequest, generateKeyPair } from '@corral/pki';
import { AgentClients } from './agent-clients';

// The reconciler's AGENT_TLS_* files re-issued while it runs: the next call
// to an agent goes over a new channel made with the new certificate; the
// old channel is kept for calls under way (closed after the grace).
describe('AgentClients with reloading AGENT_TLS_* files', () => {
  let ca: CertificateAuthority;
  let dir: string;
  const host = { id: 'reconcile-host-1', agentAddress: '127.0.0.1:1' };

  async function material(): Promise<TlsMaterial> {
    const keys = generateKeyPair();
    const issued = await ca.issue({
      csrPem: await createCertificateRequest(keys.privateKeyPem, 'x'),
      identity: { kind: 'control-plane', service: 'reconciler' },
      usages: ['client'],
      validForSeconds: 3600,
      now: new Date(),
    });
    return { caCertificatePem: ca.certificatePem, certificatePem: issued.certificatePem, privateKeyPem: keys.privateKeyPem };
  }
  const config = () => ({ agentTlsCaFile: join(dir, 'ca.pem'), agentTlsCertFile: join(dir, 'reconciler.pem'), agentTlsKeyFile: join(dir, 'reconciler-key.pem') });
  const put = (path: string, content: string) => {
    writeFileSync(`${path}.tmp`, content, { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  };
  const write = (m: TlsMaterial, only?: 'key') => {
    put(config().agentTlsCaFile, m.caCertificatePem);
    put(config().agentTlsKeyFile, m.privateKeyPem);
    if (only !== 'key') put(config().agentTlsCertFile, m.certificatePem);
  };

  beforeAll(async () => {
    ca = await CertificateAuthority.load(await createCertificateAuthority());
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'corral-reconciler-tls-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('reuses the channel while the files are unchanged and opens a new one once they are re-issued', async () => {
    write(await material());
    const tls = loadAgentTlsMaterial(config(), { recheckMs: 0 });
    expect(tls).toBeDefined();
    const agents = new AgentClients({ deadlineMs: 1000, tls });
    try {
      const first = agents.get(host);
      expect(agents.get(host)).toBe(first);
      const before = tls!.current();

      write(await material());
      const renewed = agents.get(host);
      expect(renewed).not.toBe(first);
      expect(tls!.current()).not.toBe(before);
      expect(tls!.current().certificatePem).not.toBe(before.certificatePem);
      expect(agents.get(host)).toBe(renewed);
    } finally {
      agents.closeAll();
    }
  });

  it('keeps the working channel while the replaced files do not hang together (a new key beside the old certificate)', async () => {
    write(await material());
    const tls = loadAgentTlsMaterial(config(), { recheckMs: 0 });
    const agents = new AgentClients({ deadlineMs: 1000, tls });
    try {
      const first = agents.get(host);
      write(await material(), 'key');
      expect(agents.get(host)).toBe(first);
    } finally {
      agents.closeAll();
    }
  });

  it('calls in plaintext without the files, and names the variable of a file that cannot be read', () => {
    expect(loadAgentTlsMaterial({ agentTlsCaFile: undefined, agentTlsCertFile: undefined, agentTlsKeyFile: undefined })).toBeUndefined();
    expect(() => loadAgentTlsMaterial(config())).toThrow(/AGENT_TLS_CA_FILE/);
  });
});
