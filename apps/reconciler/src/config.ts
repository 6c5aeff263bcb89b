import { address, ConfigError, int, loadConfig, oneOf, optionalStr, port, str, url, type ConfigOf, type Env } from '@corral/config';
import { natsNamespaceConfigSchema, natsTlsConfigProblems, natsTlsConfigSchema } from '@corral/events';
import { agentTlsConfigProblems, agentTlsConfigSchema } from '@corral/grpc';

export const reconcilerConfigSchema = {
  grpcHost: str('RECONCILER_GRPC_HOST', { default: '127.0.0.1' }),
  grpcPort: port('RECONCILER_GRPC_PORT', { default: 50055 }),
  databaseUrl: url('DATABASE_URL', { protocols: ['postgres:', 'postgresql:'], secret: true }),
  natsUrl: url('NATS_URL', { protocols: ['nats:', 'tls:'] }),
  ...natsTlsConfigSchema,
  ...natsNamespaceConfigSchema,
  schedulerAddr: address('SCHEDULER_ADDR', { default: '127.0.0.1:50051' }),
  hostRegistryAddr: address('HOST_REGISTRY_ADDR', { default: '127.0.0.1:50052' }),
  // The CA host-registry's TLS certificate must chain to (it must name
  // control-plane/host-registry). Unset: host-registry is called in plaintext.
  hostRegistryCaFile: optionalStr('HOST_REGISTRY_CA_FILE'),
  // This replica's name in the leader row and the audit trail's actor; default: host name + pid.
  replicaId: optionalStr('RECONCILER_REPLICA_ID'),
  // How often a round runs (and a standby tries to become leader).
  intervalMs: int('RECONCILE_INTERVAL_MS', { default: 5_000, min: 50 }),
  // Nothing younger than this (an open intent, a fresh runtime) is reaped or failed.
  intentGraceMs: int('RECONCILE_INTENT_GRACE_MS', { default: 60_000, min: 0 }),
  // Provisioning for longer than this is stuck.
  provisioningTimeoutMs: int('RECONCILE_PROVISIONING_TIMEOUT_MS', { default: 300_000, min: 0 }),
  // A host report older than this says nothing about drift.
  reportFreshnessMs: int('RECONCILE_REPORT_FRESHNESS_MS', { default: 10_000, min: 100 }),
  // At most this many actions per round; the rest wait for the next one.
  maxActionsPerRound: int('RECONCILE_MAX_ACTIONS', { default: 20, min: 0, max: 10_000 }),
  agentCallDeadlineMs: int('AGENT_CALL_DEADLINE_MS', { default: 15_000, min: 100 }),
  // Restarts and teardowns wait for the agent's stop and start.
  schedulerCallDeadlineMs: int('SCHEDULER_CALL_DEADLINE_MS', { default: 60_000, min: 100 }),
  // The reconciler's control-plane certificate for mutual TLS with agents
  // (all three or none; `corral tls cert create --service reconciler`).
  ...agentTlsConfigSchema,
  logLevel: oneOf('LOG_LEVEL', ['error', 'warn', 'info', 'debug'] as const, { default: 'info' }),
};

export type ReconcilerConfig = ConfigOf<typeof reconcilerConfigSchema>;

export function loadReconcilerConfig(env: Env = process.env): ReconcilerConfig {
  const config = loadConfig(reconcilerConfigSchema, env);
  const natsTlsProblems = natsTlsConfigProblems(config);
  if (natsTlsProblems.length > 0) throw new ConfigError(natsTlsProblems);
  const agentTlsProblems = agentTlsConfigProblems(config);
  if (agentTlsProblems.length > 0) throw new ConfigError(agentTlsProblems);
  return config;
}
