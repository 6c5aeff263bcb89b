import { address, int, loadConfig, oneOf, optionalStr, port, str, url, type ConfigOf } from '@corral/config';

export const gatewayConfigSchema = {
  httpHost: str('GATEWAY_HTTP_HOST', { default: '127.0.0.1' }),
  httpPort: port('GATEWAY_HTTP_PORT', { default: 8080 }),
  grpcHost: str('GATEWAY_GRPC_HOST', { default: '127.0.0.1' }),
  grpcPort: port('GATEWAY_GRPC_PORT', { default: 50050 }),
  schedulerAddr: address('SCHEDULER_ADDR', { default: '127.0.0.1:50051' }),
  hostRegistryAddr: address('HOST_REGISTRY_ADDR', { default: '127.0.0.1:50052' }),
  databaseUrl: url('DATABASE_URL', { protocols: ['postgres:', 'postgresql:'], secret: true }),
  bodyLimitBytes: int('GATEWAY_BODY_LIMIT_BYTES', { default: 1024 * 1024, min: 1024, max: 64 * 1024 * 1024 }),
  /** Largest file upload (PUT /v1/workloads/{id}/files, WriteWorkloadFile); larger ones get 413 / RESOURCE_EXHAUSTED. */
  fileMaxBytes: int('GATEWAY_FILE_MAX_BYTES', { default: 256 * 1024 * 1024, min: 1 }),
  /** Where to also write a newly created first admin key (mode 0600), for launchers. */
  adminKeyFile: optionalStr('GATEWAY_ADMIN_KEY_FILE'),
  backendDeadlineMs: int('GATEWAY_BACKEND_DEADLINE_MS', { default: 10_000, min: 100, max: 300_000 }),
  logLevel: oneOf('LOG_LEVEL', ['error', 'warn', 'info', 'debug'] as const, { default: 'info' }),
};

export type GatewayConfig = ConfigOf<typeof gatewayConfigSchema>;

export const loadGatewayConfig = (env = process.env) => loadConfig(gatewayConfigSchema, env);
