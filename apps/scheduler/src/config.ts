import { address, int, loadConfig, oneOf, port, str, url, type ConfigOf } from '@corral/config';

export const schedulerConfigSchema = {
  grpcHost: str('SCHEDULER_GRPC_HOST', { default: '127.0.0.1' }),
  grpcPort: port('SCHEDULER_GRPC_PORT', { default: 50051 }),
  databaseUrl: url('DATABASE_URL', { protocols: ['postgres:', 'postgresql:'], secret: true }),
  natsUrl: url('NATS_URL', { protocols: ['nats:', 'tls:'] }),
  hostRegistryAddr: address('HOST_REGISTRY_ADDR', { default: '127.0.0.1:50052' }),
  agentCallDeadlineMs: int('AGENT_CALL_DEADLINE_MS', { default: 15_000, min: 100 }),
  defaultStopTimeoutSeconds: int('DEFAULT_STOP_TIMEOUT_SECONDS', { default: 10, min: 0, max: 3600 }),
  logLevel: oneOf('LOG_LEVEL', ['error', 'warn', 'info', 'debug'] as const, { default: 'info' }),
};

export type SchedulerConfig = ConfigOf<typeof schedulerConfigSchema>;

export const loadSchedulerConfig = (env = process.env) => loadConfig(schedulerConfigSchema, env);
