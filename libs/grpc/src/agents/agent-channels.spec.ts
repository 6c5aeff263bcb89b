import { CertificateAuthority, createCertificateAuthority, createCertificateRequest, generateKeyPair } from '@corral/pki';
import type { TlsMaterial } from '../tls/mutual-tls';
import { AgentChannels } from './agent-channels';
import { agentTlsConfigProblems, loadAgentTlsMaterial } from './agent-tls';

// The channels every control-plane service keeps to agents: one per host id
// and address, a renewed certificate taken for the next call, the replaced
// channel closed only after its grace. No agent is dialled: a channel
// connects on its first call.
describe('AgentChannels', () => {
  let ca: CertificateAuthority;
  const host = { id: 'channels-host-1', agentAddress: '127.0.0.1:1' };

  async function material(): Promise<TlsMaterial> {
    const keys = generateKeyPair();
    const issued = await ca.issue({
      csrPem: await createCertificateRequest(keys.privateKeyPem, 'x'),
      identity: { kind: 'control-plane', service: 'scheduler' },
      usages: ['client'],
      validForSeconds: 3600,
      now: new Date(),
    });
    return { caCertificatePem: ca.certificatePem, certificatePem: issued.certificatePem, privateKeyPem: keys.privateKeyPem };
  }

  beforeAll(async () => {
    ca = await CertificateAuthority.load(await createCertificateAuthority());
  });
  afterEach(() => jest.useRealTimers());

  it('reuses one channel per host id and address, in plaintext without material', () => {
    const channels = new AgentChannels({ deadlineMs: 1000 });
    try {
      expect(channels.mutualTls).toBe(false);
      const first = channels.get(host);
      expect(channels.get(host)).toBe(first);
      expect(channels.get({ ...host, id: 'channels-host-2' })).not.toBe(first);
    } finally {
      channels.closeAll();
    }
  });

  it('opens a new channel once the material changes and closes the replaced one only after the grace', async () => {
    let current = await material();
    const channels = new AgentChannels({ deadlineMs: 1000, tls: { current: () => current }, retiredChannelGraceMs: 5000 });
    jest.useFakeTimers();
    try {
      expect(channels.mutualTls).toBe(true);
      const first = channels.get(host);
      const closeFirst = jest.spyOn(first.raw, 'close');
      current = await material();
      const renewed = channels.get(host);
      expect(renewed).not.toBe(first);
      expect(channels.get(host)).toBe(renewed);
      jest.advanceTimersByTime(4999);
      expect(closeFirst).not.toHaveBeenCalled();
      jest.advanceTimersByTime(1);
      expect(closeFirst).toHaveBeenCalledTimes(1);
    } finally {
      channels.closeAll();
    }
  });

  it('closes retired channels at once on closeAll, and evicts every channel to an address', async () => {
    let current = await material();
    const channels = new AgentChannels({ deadlineMs: 1000, tls: { current: () => current } });
    const retired = channels.get(host);
    const closeRetired = jest.spyOn(retired.raw, 'close');
    current = await material();
    const live = channels.get(host);
    const closeLive = jest.spyOn(live.raw, 'close');
    channels.evict(host.agentAddress);
    expect(closeLive).toHaveBeenCalledTimes(1);
    expect(channels.get(host)).not.toBe(live);
    channels.closeAll();
    expect(closeRetired).toHaveBeenCalledTimes(1);
  });
});

describe('AGENT_TLS_* configuration', () => {
  it('wants all three files or none, naming the missing variables', () => {
    expect(agentTlsConfigProblems({})).toEqual([]);
    expect(agentTlsConfigProblems({ agentTlsCaFile: 'ca', agentTlsCertFile: 'c', agentTlsKeyFile: 'k' })).toEqual([]);
    expect(agentTlsConfigProblems({ agentTlsCaFile: 'ca' })).toEqual([
      'AGENT_TLS_CERT_FILE, AGENT_TLS_KEY_FILE are required when any of AGENT_TLS_CA_FILE, AGENT_TLS_CERT_FILE, AGENT_TLS_KEY_FILE is set',
    ]);
    expect(agentTlsConfigProblems({ agentTlsCaFile: 'ca', agentTlsCertFile: 'c' })).toEqual([
      'AGENT_TLS_KEY_FILE is required when any of AGENT_TLS_CA_FILE, AGENT_TLS_CERT_FILE, AGENT_TLS_KEY_FILE is set',
    ]);
  });

  it('calls in plaintext without the files, and names the variable of a file that cannot be read', () => {
    expect(loadAgentTlsMaterial({})).toBeUndefined();
    expect(() => loadAgentTlsMaterial({ agentTlsCaFile: '/nonexistent/ca.pem', agentTlsCertFile: '/nonexistent/c.pem', agentTlsKeyFile: '/nonexistent/k.pem' })).toThrow(/AGENT_TLS_CA_FILE/);
  });
});
