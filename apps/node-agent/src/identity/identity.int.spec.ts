import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnauthenticatedError } from '@corral/domain';
import { implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { hostRegistryV1 } from '@corral/proto';
import { freePort } from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import { startNodeAgent } from '../node-agent';

// Registration over real gRPC against a stand-in host registry that
// implements RegisterHost only (the real one is covered end to end elsewhere).

describe('agent registration and identity', () => {
  let stateDir: string;
  let registry: RunningGrpcServer;
  const requests: hostRegistryV1.RegisterHostRequest[] = [];
  const expiresAt = new Date(Date.now() + 86_400_000);
  const bus = { publish: () => undefined };

  beforeAll(async () => {
    registry = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: hostRegistryV1.HostRegistryServiceService,
          implementation: implementUnary(
            hostRegistryV1.HostRegistryServiceService,
            {
              async registerHost(req) {
                requests.push(req);
                if (req.registrationToken !== 'crt_good') throw new UnauthenticatedError('registration token is invalid or used');
                return { hostId: `host-${requests.length}`, hostToken: 'host-token-secret', hostTokenExpiresAt: expiresAt, refreshToken: 'crr_refresh-secret', refreshTokenExpiresAt: expiresAt, certificate: undefined };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
  });
  afterAll(() => registry.stop());

  beforeEach(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-identity-'));
    requests.length = 0;
  });
  afterEach(() => rmSync(stateDir, { recursive: true, force: true }));

  const config = (env: Record<string, string> = {}) =>
    loadNodeAgentConfig({
      AGENT_GRPC_PORT: '0',
      AGENT_STATE_DIR: stateDir,
      AGENT_NAME: 'agent-under-test',
      HOST_REGISTRY_ADDR: registry.address,
      NATS_URL: 'nats://127.0.0.1:1',
      // This stand-in registry serves plaintext (TLS: credentials/control-plane-trust.int.spec.ts).
      AGENT_ALLOW_INSECURE_CONTROL_PLANE: 'true',
      ...env,
    });

  it('registers once with the token, stores the identity privately, and reuses it on restart', async () => {
    const agent = await startNodeAgent(config({ AGENT_REGISTRATION_TOKEN: 'crt_good', AGENT_ENABLE_PROCESS_DRIVER: 'true' }), { bus, logger: silentLogger });
    expect(agent.hostId).toBe('host-1');
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({
      registrationToken: 'crt_good',
      name: 'agent-under-test',
      agentAddress: agent.address,
      capacity: { cpuMillis: expect.any(Number), memoryMb: expect.any(Number), diskMb: expect.any(Number) },
      drivers: [{ name: 'process', healthy: true, version: expect.any(String), detail: expect.any(String) }],
    });
    expect(requests[0].capacity?.memoryMb).toBeGreaterThan(0);
    await agent.stop();

    const file = join(stateDir, 'identity.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({
      hostId: 'host-1',
      hostToken: 'host-token-secret',
      expiresAt: expiresAt.toISOString(),
      refreshToken: 'crr_refresh-secret',
      refreshTokenExpiresAt: expiresAt.toISOString(),
    });

    // A restart without the (single-use) token is the same host, no new registration.
    const again = await startNodeAgent(config(), { bus, logger: silentLogger });
    expect(again.hostId).toBe('host-1');
    expect(requests).toHaveLength(1);
    await again.stop();
  });

  it('reports a disabled process driver as unhealthy when registering', async () => {
    const agent = await startNodeAgent(config({ AGENT_REGISTRATION_TOKEN: 'crt_good' }), { bus, logger: silentLogger });
    expect(requests[0].drivers).toEqual([expect.objectContaining({ name: 'process', healthy: false, detail: expect.stringContaining('AGENT_ENABLE_PROCESS_DRIVER') })]);
    await agent.stop();
  });

  it('fails fast, naming AGENT_REGISTRATION_TOKEN, when there is neither identity nor token', async () => {
    await expect(startNodeAgent(config(), { bus, logger: silentLogger })).rejects.toThrow(/AGENT_REGISTRATION_TOKEN/);
    expect(requests).toHaveLength(0);
  });

  it('fails when the registry refuses the token, leaving no identity behind', async () => {
    await expect(startNodeAgent(config({ AGENT_REGISTRATION_TOKEN: 'crt_used' }), { bus, logger: silentLogger })).rejects.toThrow(
      /refused.*AGENT_REGISTRATION_TOKEN/,
    );
    expect(() => statSync(join(stateDir, 'identity.json'))).toThrow();
  });

  it('releases its port when start-up fails after binding', async () => {
    const port = String(await freePort());
    await expect(startNodeAgent(config({ AGENT_GRPC_PORT: port, AGENT_REGISTRATION_TOKEN: 'crt_used' }), { bus, logger: silentLogger })).rejects.toThrow();
    const agent = await startNodeAgent(config({ AGENT_GRPC_PORT: port, AGENT_REGISTRATION_TOKEN: 'crt_good' }), { bus, logger: silentLogger });
    expect(agent.address).toBe(`127.0.0.1:${port}`);
    await agent.stop();
  });
});
