import { bool, ConfigError, int, list, loadConfig, oneOf, optionalStr, port, str, url, type ConfigOf, type Env } from '@corral/config';
import { natsNamespaceConfigSchema, natsTlsConfigProblems, natsTlsConfigSchema } from '@corral/events';

export const hostRegistryConfigSchema = {
  grpcHost: str('HOST_REGISTRY_GRPC_HOST', { default: '127.0.0.1' }),
  grpcPort: port('HOST_REGISTRY_GRPC_PORT', { default: 50052 }),
  databaseUrl: url('DATABASE_URL', { protocols: ['postgres:', 'postgresql:'], secret: true }),
  natsUrl: url('NATS_URL', { protocols: ['nats:', 'tls:'] }),
  ...natsTlsConfigSchema,
  ...natsNamespaceConfigSchema,
  // Encrypts the host signing keys' private halves (and the retry copy of
  // refreshed credentials) at rest: AES-256-GCM under keys derived from it.
  // At least 32 bytes; every replica must share it.
  hostKeyEncryptionKey: optionalStr('HOST_KEY_ENCRYPTION_KEY', { secret: true }),
  // Older name of HOST_KEY_ENCRYPTION_KEY, used when that is not set.
  hostTokenSecret: optionalStr('HOST_TOKEN_SECRET', { secret: true }),
  // Lifetime of a host token (JWT); agents refresh before it ends.
  hostTokenTtlSeconds: int('HOST_TOKEN_TTL_SECONDS', { default: 900, min: 60, max: 86_400 }),
  hostRefreshTokenTtlSeconds: int('HOST_REFRESH_TOKEN_TTL_SECONDS', { default: 30 * 86_400, min: 3600 }),
  // How long a spent refresh token still gets the same answer (the caller
  // lost it) before presenting it again revokes the family.
  hostRefreshRetryWindowSeconds: int('HOST_REFRESH_RETRY_WINDOW_SECONDS', { default: 30, min: 0, max: 600 }),
  // How long each signing key signs before the next takes over.
  hostSigningKeyRotationSeconds: int('HOST_SIGNING_KEY_ROTATION_SECONDS', { default: 7 * 86_400, min: 600 }),
  // How long a new key is published (GetJwks) before it signs: longer than
  // any verifier caches the key set.
  hostSigningKeyPublishAheadSeconds: int('HOST_SIGNING_KEY_PUBLISH_AHEAD_SECONDS', { default: 3600, min: 120 }),
  // The internal CA that signs hosts' mutual-TLS certificates (both or
  // neither; see `corral tls ca create`). Without it hosts get no certificate
  // and their agents serve plaintext.
  caCertFile: optionalStr('CORRAL_CA_CERT_FILE'),
  caKeyFile: optionalStr('CORRAL_CA_KEY_FILE'),
  // With the CA, the registry serves gRPC over TLS with a certificate it
  // issues itself (control-plane/host-registry): these names (DNS or IP) are
  // added to its bind host, localhost and 127.0.0.1, for clients that check
  // the name they dialled (grpcurl --cacert).
  tlsNames: list('HOST_REGISTRY_TLS_NAMES', { default: [] }),
  // Lifetime of a host certificate; agents renew it with every JWT refresh.
  hostCertificateTtlSeconds: int('HOST_CERTIFICATE_TTL_SECONDS', { default: 86_400, min: 300, max: 30 * 86_400 }),
  registrationTokenDefaultTtlSeconds: int('REGISTRATION_TOKEN_DEFAULT_TTL_SECONDS', { default: 3600, min: 60 }),
  heartbeatIntervalMs: int('HEARTBEAT_INTERVAL_MS', { default: 1000, min: 100 }),
  // 2 × 1 s puts detection (last heartbeat → unreachable, plus one check
  // and one flush) at ≈2.2–2.5 s, inside the 3 s p99 target; 3 would not be
  // (bench/membership). A false alarm is cheap: workloads go `missing` and
  // the next heartbeat restores them.
  missedHeartbeatsBeforeUnreachable: int('MISSED_HEARTBEATS_BEFORE_UNREACHABLE', { default: 2, min: 1 }),
  // Heartbeats are kept in memory (newest per host) and written as one
  // batched UPDATE this often; liveness lags receipt by at most this much.
  heartbeatFlushIntervalMs: int('HEARTBEAT_FLUSH_INTERVAL_MS', { default: 200, min: 10, max: 5000 }),
  // `direct` (one UPDATE per heartbeat) exists only so bench/membership can
  // measure what batching saves; it does not report returning hosts.
  heartbeatWriteMode: oneOf('HEARTBEAT_WRITE_MODE', ['batched', 'direct'] as const, { default: 'batched' }),
  // Heartbeats without a valid host JWT for the host they speak for are
  // dropped. `false` only for benchmarks that simulate hosts without tokens.
  heartbeatRequireHostToken: bool('HEARTBEAT_REQUIRE_HOST_TOKEN', { default: true }),
  // How often the monitoring replica looks for silent hosts (and the others
  // try to take over the monitor lock).
  livenessCheckIntervalMs: int('LIVENESS_CHECK_INTERVAL_MS', { default: 250, min: 10, max: 60_000 }),
  // Brake: when more than this percentage of the online hosts (of a fleet of
  // at least LIVENESS_BRAKE_MIN_HOSTS) would go silent in one check, none is
  // marked and an alarm is raised instead.
  livenessBrakeSilentPercent: int('LIVENESS_BRAKE_SILENT_PERCENT', { default: 50, min: 1, max: 100 }),
  livenessBrakeMinHosts: int('LIVENESS_BRAKE_MIN_HOSTS', { default: 4, min: 1 }),
  // This replica's name in alarms, logs and the monitor row; random when unset.
  replicaId: optionalStr('HOST_REGISTRY_REPLICA_ID'),
  logLevel: oneOf('LOG_LEVEL', ['error', 'warn', 'info', 'debug'] as const, { default: 'info' }),
};

export type HostRegistryConfig = ConfigOf<typeof hostRegistryConfigSchema> & {
  /** HOST_KEY_ENCRYPTION_KEY, else HOST_TOKEN_SECRET. */
  readonly keyEncryptionKey: string;
};

export function loadHostRegistryConfig(env: Env = process.env): HostRegistryConfig {
  const config = loadConfig(hostRegistryConfigSchema, env);
  const problems: string[] = [];
  const keyEncryptionKey = config.hostKeyEncryptionKey ?? config.hostTokenSecret;
  if (keyEncryptionKey === undefined) problems.push('HOST_KEY_ENCRYPTION_KEY is required (HOST_TOKEN_SECRET is accepted under its older name)');
  else if (Buffer.byteLength(keyEncryptionKey, 'utf8') < 32) {
    problems.push(`${config.hostKeyEncryptionKey !== undefined ? 'HOST_KEY_ENCRYPTION_KEY' : 'HOST_TOKEN_SECRET'} must be at least 32 bytes`);
  }
  if (config.hostSigningKeyPublishAheadSeconds >= config.hostSigningKeyRotationSeconds) {
    problems.push('HOST_SIGNING_KEY_PUBLISH_AHEAD_SECONDS must be less than HOST_SIGNING_KEY_ROTATION_SECONDS');
  }
  if ((config.caCertFile === undefined) !== (config.caKeyFile === undefined)) {
    problems.push(config.caCertFile === undefined ? 'CORRAL_CA_CERT_FILE is required when CORRAL_CA_KEY_FILE is set' : 'CORRAL_CA_KEY_FILE is required when CORRAL_CA_CERT_FILE is set');
  }
  problems.push(...natsTlsConfigProblems(config));
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({ ...config, keyEncryptionKey: keyEncryptionKey as string });
}
