import { hostname } from 'node:os';
import { address, bool, ConfigError, int, list, loadConfig, oneOf, optionalStr, port, str, url, type ConfigOf, type Env } from '@corral/config';
import { InvalidArgumentError } from '@corral/domain';
import { natsNamespaceConfigSchema, natsTlsConfigProblems, natsTlsConfigSchema } from '@corral/events';
import { CREDENTIAL_FAILURE_POLICIES } from './credentials/credential-refresher';
import { DEFAULT_PORT_RANGE, parsePortRange, type PortRange } from './ports';

const advertiseAddress = address('AGENT_ADVERTISE_ADDRESS');

/** A comma-separated list of registries, each host[:port] (lowercased), as image pulls name them. */
function registryList(variable: string) {
  const text = list(variable, { default: [] });
  return {
    ...text,
    parse: (raw: string | undefined): string[] =>
      text.parse(raw).map((entry) => {
        if (!/^[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]{1,5})?$/i.test(entry)) {
          throw new InvalidArgumentError(`${variable} must list registries as host[:port], got "${entry}"`, { field: variable });
        }
        return entry.toLowerCase();
      }),
  };
}
const portRangeText = str('AGENT_PORT_RANGE', { default: `${DEFAULT_PORT_RANGE.start}-${DEFAULT_PORT_RANGE.end}`, pattern: /^\d{1,5}\s*-\s*\d{1,5}$/ });

export const nodeAgentConfigSchema = {
  grpcHost: str('AGENT_GRPC_HOST', { default: '127.0.0.1' }),
  grpcPort: port('AGENT_GRPC_PORT', { default: 50060 }),
  /** host:port the control plane calls; default: the bound host:port. */
  advertiseAddress: { ...advertiseAddress, parse: (raw: string | undefined) => (raw === undefined || raw === '' ? undefined : advertiseAddress.parse(raw)) },
  hostRegistryAddress: address('HOST_REGISTRY_ADDR', { default: '127.0.0.1:50052' }),
  /** The CA host-registry's TLS certificate must chain to (`<pki>/ca.pem`). */
  controlPlaneCaFile: optionalStr('AGENT_CONTROL_PLANE_CA_FILE'),
  /**
   * First contact without a CA file: the hex SHA-256 of the CA certificate
   * (`corral tls ca pin`). The CA is taken from host-registry's TLS handshake,
   * checked against this, then trusted and kept in identity.json.
   */
  controlPlaneCaSha256: str('AGENT_CONTROL_PLANE_CA_SHA256', { default: '', pattern: /^(sha256:)?([0-9a-fA-F]{2}:?){31}[0-9a-fA-F]{2}$/ }),
  /** Call host-registry in plaintext (tokens unencrypted): development only, logged as a warning. */
  allowInsecureControlPlane: bool('AGENT_ALLOW_INSECURE_CONTROL_PLANE', { default: false }),
  /** Single-use; only read when the state dir holds no identity yet. */
  registrationToken: optionalStr('AGENT_REGISTRATION_TOKEN', { secret: true }),
  stateDir: str('AGENT_STATE_DIR', { default: '.data/agent' }),
  name: str('AGENT_NAME', { default: hostname() }),
  // raw process execution has no isolation: never on unless asked for.
  enableProcessDriver: bool('AGENT_ENABLE_PROCESS_DRIVER', { default: false }),
  // podman is registered when enabled; its fingerprint then says whether the
  // binary answers on this host (unhealthy drivers get no placements).
  enablePodmanDriver: bool('AGENT_ENABLE_PODMAN_DRIVER', { default: false }),
  podmanProgram: str('AGENT_PODMAN_PROGRAM', { default: 'podman' }),
  enableQemuDriver: bool('AGENT_ENABLE_QEMU_DRIVER', { default: false }),
  // auto = tcg unless a kvm probe boot succeeds: on hosts where /dev/kvm
  // opens but guests hang, kvm must never be chosen by default.
  qemuAccelerator: oneOf('AGENT_QEMU_ACCELERATOR', ['auto', 'kvm', 'tcg'] as const, { default: 'auto' }),
  qemuDefaultMemoryMb: int('AGENT_QEMU_DEFAULT_MEMORY_MB', { default: 256, min: 32 }),
  qemuDefaultVcpus: int('AGENT_QEMU_DEFAULT_VCPUS', { default: 1, min: 1, max: 64 }),
  /**
   * Where VM root-disk clones live (`<dir>/volumes/<kind>/`); default: the
   * state dir. Put it on the disk that should hold them.
   */
  volumesDir: optionalStr('AGENT_VOLUMES_DIR'),
  /** auto: device-mapper snapshots where /dev/mapper/control opens and dmsetup is installed, else qcow2 overlays. */
  volumeBackend: oneOf('AGENT_VOLUME_BACKEND', ['auto', 'qcow2', 'device-mapper'] as const, { default: 'auto' }),
  heartbeatIntervalMs: int('AGENT_HEARTBEAT_INTERVAL_MS', { default: 1000, min: 100, max: 60_000 }),
  /** Host ports handed to workload routes, e.g. 10000-60000 (inclusive). */
  portRange: { ...portRangeText, parse: (raw: string | undefined): PortRange => parsePortRange(portRangeText.parse(raw), 'AGENT_PORT_RANGE') },
  /** When host credentials can no longer be refreshed: keep workloads running, or pause every one that can pause. */
  credentialFailurePolicy: oneOf('AGENT_CREDENTIAL_FAILURE_POLICY', CREDENTIAL_FAILURE_POLICIES, { default: 'keep-running' }),
  /** Largest file WriteFile accepts; larger uploads are refused and leave nothing behind. */
  fileMaxBytes: int('AGENT_FILE_MAX_BYTES', { default: 256 * 1024 * 1024, min: 1 }),
  /** Largest image archive ImportImage accepts (spooled under the state dir). */
  imageMaxBytes: int('AGENT_IMAGE_MAX_BYTES', { default: 8 * 1024 * 1024 * 1024, min: 1 }),
  /** Registries (host[:port], comma-separated) PullImage may use; empty: any. Others are InvalidArgument `ref`. */
  imageAllowedRegistries: registryList('AGENT_IMAGE_ALLOWED_REGISTRIES'),
  /** Registries pulled from without TLS verification (plain HTTP or self-signed), e.g. 127.0.0.1:5000. Only these. */
  imageInsecureRegistries: registryList('AGENT_IMAGE_INSECURE_REGISTRIES'),
  /** Longest a pull may take before podman is killed. */
  imagePullTimeoutMs: int('AGENT_IMAGE_PULL_TIMEOUT_MS', { default: 30 * 60_000, min: 1000 }),
  /** Exec through a driver without streaming exec: stdin is buffered until EOF, up to this much. */
  execBufferedStdinMaxBytes: int('AGENT_EXEC_BUFFERED_STDIN_MAX_BYTES', { default: 1024 * 1024, min: 0, max: 64 * 1024 * 1024 }),
  /** How long such a buffered exec may run. */
  execBufferedTimeoutMs: int('AGENT_EXEC_BUFFERED_TIMEOUT_MS', { default: 10 * 60_000, min: 1000 }),
  natsUrl: url('NATS_URL', { protocols: ['nats:', 'tls:'] }),
  ...natsTlsConfigSchema,
  ...natsNamespaceConfigSchema,
  logLevel: oneOf('LOG_LEVEL', ['error', 'warn', 'info', 'debug'] as const, { default: 'info' }),
};

export type NodeAgentConfig = ConfigOf<typeof nodeAgentConfigSchema>;

export const loadNodeAgentConfig = (env: Env = process.env): NodeAgentConfig => {
  const config = loadConfig(nodeAgentConfigSchema, env);
  const problems = natsTlsConfigProblems(config);
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
};
