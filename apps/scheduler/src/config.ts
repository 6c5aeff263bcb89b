import { address, bool, ConfigError, int, loadConfig, oneOf, optionalStr, port, str, url, type ConfigOf, type Env } from '@corral/config';
import { natsNamespaceConfigSchema, natsTlsConfigProblems, natsTlsConfigSchema } from '@corral/events';
import { agentTlsConfigProblems, agentTlsConfigSchema } from '@corral/grpc';

export const schedulerConfigSchema = {
  grpcHost: str('SCHEDULER_GRPC_HOST', { default: '127.0.0.1' }),
  grpcPort: port('SCHEDULER_GRPC_PORT', { default: 50051 }),
  databaseUrl: url('DATABASE_URL', { protocols: ['postgres:', 'postgresql:'], secret: true }),
  natsUrl: url('NATS_URL', { protocols: ['nats:', 'tls:'] }),
  ...natsTlsConfigSchema,
  ...natsNamespaceConfigSchema,
  hostRegistryAddr: address('HOST_REGISTRY_ADDR', { default: '127.0.0.1:50052' }),
  // The CA host-registry's TLS certificate must chain to (it must name
  // control-plane/host-registry). Unset: host-registry is called in plaintext.
  hostRegistryCaFile: optionalStr('HOST_REGISTRY_CA_FILE'),
  // WorkloadStateChanged events are applied only with a valid host JWT of the
  // host the workload is placed on. `false` only for tests of old agents.
  requireHostToken: bool('SCHEDULER_REQUIRE_HOST_TOKEN', { default: true }),
  agentCallDeadlineMs: int('AGENT_CALL_DEADLINE_MS', { default: 15_000, min: 100 }),
  // The scheduler's control-plane certificate for mutual TLS with agents
  // (all three or none; `corral tls cert create --service scheduler`).
  // Without them agents are called in plaintext.
  ...agentTlsConfigSchema,
  defaultStopTimeoutSeconds: int('DEFAULT_STOP_TIMEOUT_SECONDS', { default: 10, min: 0, max: 3600 }),
  // How hosts are chosen when a request does not say (see ARCHITECTURE.md,
  // Placement): round-robin keeps spreading workloads that declare no
  // resources, which most do; every strategy checks and reserves declared
  // resources, so none over-commits a host.
  placementStrategy: oneOf('SCHEDULER_PLACEMENT_STRATEGY', ['round-robin', 'bin-pack', 'spread', 'best-of-k'] as const, { default: 'round-robin' }),
  logLevel: oneOf('LOG_LEVEL', ['error', 'warn', 'info', 'debug'] as const, { default: 'info' }),
};

export type SchedulerConfig = ConfigOf<typeof schedulerConfigSchema>;

export function loadSchedulerConfig(env: Env = process.env): SchedulerConfig {
  const config = loadConfig(schedulerConfigSchema, env);
  const natsTlsProblems = natsTlsConfigProblems(config);
  if (natsTlsProblems.length > 0) throw new ConfigError(natsTlsProblems);
  const agentTlsProblems = agentTlsConfigProblems(config);
  if (agentTlsProblems.length > 0) throw new ConfigError(agentTlsProblems);
  return config;
}
