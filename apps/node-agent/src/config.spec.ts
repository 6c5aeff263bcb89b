import { hostname } from 'node:os';
import { ConfigError } from '@corral/config';
import { loadNodeAgentConfig } from './config';

describe('node agent config', () => {
  it('has defaults for everything but NATS_URL', () => {
    expect(loadNodeAgentConfig({ NATS_URL: 'nats://127.0.0.1:4222' })).toEqual({
      grpcHost: '127.0.0.1',
      grpcPort: 50060,
      advertiseAddress: undefined,
      hostRegistryAddress: '127.0.0.1:50052',
      controlPlaneCaSha256: '',
      allowInsecureControlPlane: false,
      registrationToken: undefined,
      stateDir: '.data/agent',
      name: hostname(),
      enableProcessDriver: false,
      enablePodmanDriver: false,
      podmanProgram: 'podman',
      enableQemuDriver: false,
      qemuAccelerator: 'auto',
      qemuDefaultMemoryMb: 256,
      qemuDefaultVcpus: 1,
      volumesDir: undefined,
      volumeBackend: 'auto',
      heartbeatIntervalMs: 1000,
      portRange: { start: 10000, end: 60000 },
      credentialFailurePolicy: 'keep-running',
      fileMaxBytes: 256 * 1024 * 1024,
      imageMaxBytes: 8 * 1024 * 1024 * 1024,
      imageAllowedRegistries: [],
      imageInsecureRegistries: [],
      imagePullTimeoutMs: 1_800_000,
      execBufferedStdinMaxBytes: 1024 * 1024,
      execBufferedTimeoutMs: 600_000,
      natsUrl: 'nats://127.0.0.1:4222',
      natsSubjectNamespace: '',
      logLevel: 'info',
    });
  });

  it('reports every bad variable by name', () => {
    const load = () => loadNodeAgentConfig({ AGENT_ADVERTISE_ADDRESS: 'no-port', AGENT_ENABLE_PROCESS_DRIVER: 'maybe', AGENT_HEARTBEAT_INTERVAL_MS: '5' });
    expect(load).toThrow(ConfigError);
    expect(load).toThrow(/AGENT_ADVERTISE_ADDRESS must be host:port/);
    expect(load).toThrow(/AGENT_ENABLE_PROCESS_DRIVER must be true or false/);
    expect(load).toThrow(/AGENT_HEARTBEAT_INTERVAL_MS must be >= 100/);
    expect(load).toThrow(/NATS_URL is required/);
  });

  it('reads the host port range for routes', () => {
    expect(loadNodeAgentConfig({ NATS_URL: 'nats://n:4222', AGENT_PORT_RANGE: '20000-20099' }).portRange).toEqual({ start: 20000, end: 20099 });
    expect(() => loadNodeAgentConfig({ NATS_URL: 'nats://n:4222', AGENT_PORT_RANGE: 'all' })).toThrow(/AGENT_PORT_RANGE must match/);
    expect(() => loadNodeAgentConfig({ NATS_URL: 'nats://n:4222', AGENT_PORT_RANGE: '20000-10000' })).toThrow(/AGENT_PORT_RANGE must be ports a-b/);
  });

  it('reads the credential failure policy', () => {
    expect(loadNodeAgentConfig({ NATS_URL: 'nats://n:4222', AGENT_CREDENTIAL_FAILURE_POLICY: 'pause-all' }).credentialFailurePolicy).toBe('pause-all');
    expect(() => loadNodeAgentConfig({ NATS_URL: 'nats://n:4222', AGENT_CREDENTIAL_FAILURE_POLICY: 'stop' })).toThrow(/AGENT_CREDENTIAL_FAILURE_POLICY/);
  });

  it('reads the registries image pulls may use and those reached without TLS verification', () => {
    const config = loadNodeAgentConfig({ NATS_URL: 'nats://n:4222', AGENT_IMAGE_ALLOWED_REGISTRIES: 'docker.io, 127.0.0.1:5000', AGENT_IMAGE_INSECURE_REGISTRIES: 'Registry.Local:5000' });
    expect(config.imageAllowedRegistries).toEqual(['docker.io', '127.0.0.1:5000']);
    expect(config.imageInsecureRegistries).toEqual(['registry.local:5000']);
    expect(() => loadNodeAgentConfig({ NATS_URL: 'nats://n:4222', AGENT_IMAGE_INSECURE_REGISTRIES: 'http://127.0.0.1:5000' })).toThrow(/AGENT_IMAGE_INSECURE_REGISTRIES must list registries as host\[:port\]/);
    expect(() => loadNodeAgentConfig({ NATS_URL: 'nats://n:4222', AGENT_IMAGE_PULL_TIMEOUT_MS: '5' })).toThrow(/AGENT_IMAGE_PULL_TIMEOUT_MS/);
  });

  it('accepts an advertised address', () => {
    expect(loadNodeAgentConfig({ NATS_URL: 'nats://n:4222', AGENT_ADVERTISE_ADDRESS: '100.64.0.7:50060' }).advertiseAddress).toBe('100.64.0.7:50060');
  });
});
