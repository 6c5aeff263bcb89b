import { address, int, loadConfig, oneOf, optionalStr, optionalUrl, port, str, url, type ConfigOf } from '@corral/config';
import { natsNamespaceConfigSchema, natsTlsConfigSchema } from '@corral/events';

export const gatewayConfigSchema = {
  httpHost: str('GATEWAY_HTTP_HOST', { default: '127.0.0.1' }),
  httpPort: port('GATEWAY_HTTP_PORT', { default: 8080 }),
  grpcHost: str('GATEWAY_GRPC_HOST', { default: '127.0.0.1' }),
  grpcPort: port('GATEWAY_GRPC_PORT', { default: 50050 }),
  schedulerAddr: address('SCHEDULER_ADDR', { default: '127.0.0.1:50051' }),
  hostRegistryAddr: address('HOST_REGISTRY_ADDR', { default: '127.0.0.1:50052' }),
  /** The CA host-registry's TLS certificate must chain to (it must name control-plane/host-registry); unset: plaintext. */
  hostRegistryCaFile: optionalStr('HOST_REGISTRY_CA_FILE'),
  databaseUrl: url('DATABASE_URL', { protocols: ['postgres:', 'postgresql:'], secret: true }),
  /** Followers of the audit trail (GET /v1/events?follow) are woken by corral.audit.*; unset: they poll the table. */
  natsUrl: optionalUrl('NATS_URL', { protocols: ['nats:', 'tls:'] }),
  ...natsTlsConfigSchema,
  ...natsNamespaceConfigSchema,
  bodyLimitBytes: int('GATEWAY_BODY_LIMIT_BYTES', { default: 1024 * 1024, min: 1024, max: 64 * 1024 * 1024 }),
  /** Largest file upload (PUT /v1/workloads/{id}/files, WriteWorkloadFile); larger ones get 413 / RESOURCE_EXHAUSTED. */
  fileMaxBytes: int('GATEWAY_FILE_MAX_BYTES', { default: 256 * 1024 * 1024, min: 1 }),
  /** Largest image archive (POST /v1/hosts/{id}/images, ImportHostImage); larger ones get 413 / RESOURCE_EXHAUSTED. */
  imageMaxBytes: int('GATEWAY_IMAGE_MAX_BYTES', { default: 8 * 1024 * 1024 * 1024, min: 1 }),
  /** Longest time a client may take to send an ordinary request (headers and body); slow ones get 408. */
  requestTimeoutMs: int('GATEWAY_REQUEST_TIMEOUT_MS', { default: 60_000, min: 1000, max: 60 * 60_000 }),
  /**
   * The same for uploads (image import, file PUT), which may take hours; 0: no limit.
   * Answers are never cut: long NDJSON answers (pull, snapshot) and followed logs run as long as they last.
   */
  uploadTimeoutMs: int('GATEWAY_UPLOAD_TIMEOUT_MS', { default: 6 * 60 * 60_000, min: 0, max: 7 * 24 * 60 * 60_000 }),
  /** Where to also write a newly created first admin key (mode 0600), for launchers. */
  adminKeyFile: optionalStr('GATEWAY_ADMIN_KEY_FILE'),
  backendDeadlineMs: int('GATEWAY_BACKEND_DEADLINE_MS', { default: 10_000, min: 100, max: 300_000 }),
  logLevel: oneOf('LOG_LEVEL', ['error', 'warn', 'info', 'debug'] as const, { default: 'info' }),
};

export type GatewayConfig = ConfigOf<typeof gatewayConfigSchema>;

export const loadGatewayConfig = (env = process.env) => loadConfig(gatewayConfigSchema, env);
