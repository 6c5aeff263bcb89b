import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { implementUnary, RotatingCertificateProvider, serverIdentityChannelCredentials, serverTlsCredentials, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { caCertificatePin, CertificateAuthority, createCertificateAuthority, issueControlPlaneServerCertificate } from '@corral/pki';
import { hostRegistryV1 } from '@corral/proto';
import { loadNodeAgentConfig } from '../config';
import { startNodeAgent } from '../node-agent';
import { HOST_REGISTRY_IDENTITY } from './control-plane-trust';
import { registryClient } from './registry-client';

// The agent's first contact with host-registry over TLS, against a stand-in
// registry serving a certificate from a throw-away CA (as the real one
// does): the registration token goes only to a registry the agent verified,
// by the CA file or by the CA's pin.
describe('agent → host-registry over TLS', () => {
  let stateDir: string;
  let dir: string;
  let registry: RunningGrpcServer;
  let caPem: string;
  let otherCaPem: string;
  const requests: hostRegistryV1.RegisterHostRequest[] = [];
  const expiresAt = new Date(Date.now() + 86_400_000);
  const bus = { publish: () => undefined };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'corral-agent-trust-'));
    const created = await createCertificateAuthority();
    caPem = created.certificatePem;
    otherCaPem = (await createCertificateAuthority()).certificatePem;
    writeFileSync(join(dir, 'ca.pem'), caPem);
    writeFileSync(join(dir, 'other-ca.pem'), otherCaPem);
    const certificate = await issueControlPlaneServerCertificate(await CertificateAuthority.load(created), { service: 'host-registry', names: ['127.0.0.1'], validForSeconds: 3600 });
    registry = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      credentials: serverTlsCredentials(new RotatingCertificateProvider(certificate)),
      services: [
        {
          definition: hostRegistryV1.HostRegistryServiceService,
          implementation: implementUnary(
            hostRegistryV1.HostRegistryServiceService,
            {
              async registerHost(req) {
                requests.push(req);
                return { hostId: `host-${requests.length}`, hostToken: 'host-token-secret', hostTokenExpiresAt: expiresAt, refreshToken: 'crr_refresh', refreshTokenExpiresAt: expiresAt, certificate: undefined };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
  });
  afterAll(async () => {
    await registry.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-trust-state-'));
    requests.length = 0;
  });
  afterEach(() => rmSync(stateDir, { recursive: true, force: true }));

  const config = (env: Record<string, string> = {}) =>
    loadNodeAgentConfig({ AGENT_GRPC_PORT: '0', AGENT_STATE_DIR: stateDir, HOST_REGISTRY_ADDR: registry.address, NATS_URL: 'nats://127.0.0.1:1', ...env });
  const identityFile = () => JSON.parse(readFileSync(join(stateDir, 'identity.json'), 'utf8')) as { hostId: string; controlPlaneCaCertificatePem?: string };

  it('registers through a registry verified by AGENT_CONTROL_PLANE_CA_FILE', async () => {
    const agent = await startNodeAgent(config({ AGENT_REGISTRATION_TOKEN: 'crt_good', AGENT_CONTROL_PLANE_CA_FILE: join(dir, 'ca.pem') }), { bus, logger: silentLogger });
    expect(agent.hostId).toBe('host-1');
    expect(requests.map((r) => r.registrationToken)).toEqual(['crt_good']);
    await agent.stop();
  });

  it('with only the pin, takes the CA from the handshake, keeps it in identity.json, and trusts it on the next start', async () => {
    const pin = caCertificatePin(caPem);
    const agent = await startNodeAgent(config({ AGENT_REGISTRATION_TOKEN: 'crt_good', AGENT_CONTROL_PLANE_CA_SHA256: `sha256:${pin}` }), { bus, logger: silentLogger });
    await agent.stop();
    expect(requests).toHaveLength(1);
    expect(caCertificatePin(identityFile().controlPlaneCaCertificatePem ?? '')).toBe(pin);
    expect(statSync(join(stateDir, 'identity.json')).mode & 0o777).toBe(0o600);
    // No pin, no file: the kept CA is what it trusts now.
    const again = await startNodeAgent(config(), { bus, logger: silentLogger });
    expect(again.hostId).toBe('host-1');
    await again.stop();
  });

  it('sends nothing to a registry whose CA does not match the pin', async () => {
    await expect(
      startNodeAgent(config({ AGENT_REGISTRATION_TOKEN: 'crt_good', AGENT_CONTROL_PLANE_CA_SHA256: caCertificatePin(otherCaPem) }), { bus, logger: silentLogger }),
    ).rejects.toThrow(/presented a CA whose SHA-256 is .*, not AGENT_CONTROL_PLANE_CA_SHA256/);
    expect(requests).toHaveLength(0);
    expect(() => statSync(join(stateDir, 'identity.json'))).toThrow();
  });

  it('refuses a CA file the pin does not name', async () => {
    await expect(
      startNodeAgent(config({ AGENT_REGISTRATION_TOKEN: 'crt_good', AGENT_CONTROL_PLANE_CA_FILE: join(dir, 'ca.pem'), AGENT_CONTROL_PLANE_CA_SHA256: caCertificatePin(otherCaPem) }), {
        bus,
        logger: silentLogger,
      }),
    ).rejects.toThrow(/AGENT_CONTROL_PLANE_CA_FILE is not the CA AGENT_CONTROL_PLANE_CA_SHA256 names/);
    expect(requests).toHaveLength(0);
  });

  it('refuses to start with no way to verify the registry, naming the variables', async () => {
    await expect(startNodeAgent(config({ AGENT_REGISTRATION_TOKEN: 'crt_good' }), { bus, logger: silentLogger })).rejects.toThrow(
      /AGENT_CONTROL_PLANE_CA_FILE.*AGENT_CONTROL_PLANE_CA_SHA256.*AGENT_ALLOW_INSECURE_CONTROL_PLANE/,
    );
    expect(requests).toHaveLength(0);
  });

  it('does not reach a registry whose certificate is from another CA', async () => {
    const register = registryClient(registry.address, serverIdentityChannelCredentials(otherCaPem, HOST_REGISTRY_IDENTITY));
    await expect(register(hostRegistryV1.RegisterHostRequest.fromPartial({ registrationToken: 'crt_good', name: 'x', agentAddress: '127.0.0.1:1' }))).rejects.toMatchObject({
      code: 'UNAVAILABLE',
    });
    expect(requests).toHaveLength(0);
  });

  it('refuses a pin that is not a SHA-256 at config load', () => {
    expect(() => config({ AGENT_CONTROL_PLANE_CA_SHA256: 'abc' })).toThrow(/AGENT_CONTROL_PLANE_CA_SHA256/);
  });
});
