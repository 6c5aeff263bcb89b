import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { applyMigrations, createPrismaClient, openSessionLock } from '@corral/db';
import { connectEventBus, CredentialRefusalNotifier, natsTlsOf, Topics } from '@corral/events';
import { startGrpcServer } from '@corral/grpc';
import { createLogger, type Logger } from '@corral/logging';
import { hostRegistryV1, type eventsV1 } from '@corral/proto';
import type { HostRegistryConfig } from './config';
import { HostCertificateIssuer } from './credentials/host-certificates';
import { authenticateHost, type CredentialPolicy } from './credentials/host-credentials';
import { SealedBox } from './credentials/sealed-box';
import { DEFAULT_ROTATION, HostKeyStore } from './credentials/signing-keys';
import { hostRegistryService } from './grpc/host-registry-service';
import { RegistryServerTls } from './grpc/registry-tls';
import { ControlPlaneHealth } from './heartbeats/control-plane-health';
import { fleetHealth } from './heartbeats/fleet-health';
import { HeartbeatAuthenticator } from './heartbeats/heartbeat-authenticator';
import { knownHostIn } from './heartbeats/known-hosts';
import { HeartbeatBatcher } from './heartbeats/heartbeat-batcher';
import { DirectHeartbeatWriter } from './heartbeats/heartbeat-intake';
import { LivenessMonitor, MONITOR_LOCK_KEY } from './heartbeats/liveness-monitor';
import { publishHostStatus } from './hosts/host-events';

const KEY_CHECK_INTERVAL_MS = 60_000;

export interface RunningHostRegistry {
  address: string;
  stop(): Promise<void>;
}

export async function startHostRegistry(config: HostRegistryConfig, logger: Logger = createLogger({ service: 'host-registry', level: config.logLevel })): Promise<RunningHostRegistry> {
  // The CA is read once, before anything else starts: a bad file stops the
  // registry here, naming the variable.
  const certificates =
    config.caCertFile && config.caKeyFile
      ? await HostCertificateIssuer.load({ certificateFile: config.caCertFile, privateKeyFile: config.caKeyFile }, { validForSeconds: config.hostCertificateTtlSeconds })
      : undefined;
  if (!certificates) logger.warn('no internal CA (CORRAL_CA_CERT_FILE / CORRAL_CA_KEY_FILE): serving gRPC in plaintext, hosts get no TLS certificate and their agents serve plaintext');
  const serverTls = certificates
    ? await RegistryServerTls.start(certificates.certificateAuthority, { names: [config.grpcHost, 'localhost', '127.0.0.1', ...config.tlsNames], logger })
    : undefined;
  await applyMigrations(config.databaseUrl, { logger });
  const prisma = createPrismaClient(config.databaseUrl);
  // Signing keys: rotated (and the first one created) before serving, then
  // checked every minute; every replica reloads them as often, well inside
  // the publish-ahead period, so it knows a key before any token carries it.
  const keys = new HostKeyStore(prisma, new SealedBox(config.keyEncryptionKey), {
    policy: {
      rotationSeconds: config.hostSigningKeyRotationSeconds,
      publishAheadSeconds: config.hostSigningKeyPublishAheadSeconds,
      tokenTtlSeconds: config.hostTokenTtlSeconds,
      clockSkewSeconds: DEFAULT_ROTATION.clockSkewSeconds,
    },
    reloadEveryMs: KEY_CHECK_INTERVAL_MS,
    logger,
  });
  try {
    await keys.start(KEY_CHECK_INTERVAL_MS);
  } catch (err) {
    keys.stop();
    await prisma.$disconnect();
    throw err;
  }
  const credentials: CredentialPolicy = {
    secret: config.keyEncryptionKey,
    ttlSeconds: config.hostTokenTtlSeconds,
    refreshTtlSeconds: config.hostRefreshTokenTtlSeconds,
    retryWindowSeconds: config.hostRefreshRetryWindowSeconds,
    keys,
    logger,
  };
  const bus = await connectEventBus({
    url: config.natsUrl,
    name: 'corral-host-registry',
    logger,
    tls: natsTlsOf(config),
    namespace: config.natsSubjectNamespace,
  });
  const replicaId = config.replicaId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const silentForMs = config.heartbeatIntervalMs * config.missedHeartbeatsBeforeUnreachable;
  // Trouble with our own connections within one timeout makes stored
  // silence untrustworthy (see ControlPlaneHealth).
  const health = new ControlPlaneHealth(silentForMs, bus.status);
  const offStatus = bus.onStatus((status) => health.busStatus(status));
  const batcher = new HeartbeatBatcher(prisma, {
    onError: (err) => {
      health.databaseFailed();
      logger.error('could not store heartbeats', { err });
    },
    onFlushed: (result) => {
      health.databaseOk();
      // A write slower than a heartbeat interval means stored last-seen
      // times lag: the brake counts it as database trouble.
      if (result.durationMs > config.heartbeatIntervalMs) {
        health.databaseFailed();
        health.databaseOk();
        logger.warn('heartbeat storage is slow', { durationMs: Math.round(result.durationMs), batch: result.batch });
      }
      for (const back of result.returned) {
        logger.info('host is heartbeating again', { hostId: back.hostId });
        publishHostStatus(bus, logger, { hostId: back.hostId, status: 'online', previous: 'unreachable', reason: 'heartbeat received', workloads: back.workloads, at: new Date() });
      }
    },
  });
  health.watchStorage(() => batcher.writingForMs > config.heartbeatIntervalMs);
  batcher.start(config.heartbeatFlushIntervalMs);
  const direct = config.heartbeatWriteMode === 'direct' ? new DirectHeartbeatWriter(prisma) : undefined;
  if (direct) logger.warn('HEARTBEAT_WRITE_MODE=direct: one UPDATE per heartbeat, for benchmarks only');
  // Replicas share the queue group, so each heartbeat is taken by one of them.
  const intake = (hb: eventsV1.HostHeartbeat) => (direct ? direct.offer(hb) : batcher.offer(hb));
  const refusalNotices = new CredentialRefusalNotifier({ bus, refusedBy: 'host-registry', isKnownHost: knownHostIn(prisma), logger });
  const heartbeatAuth = new HeartbeatAuthenticator({ authenticate: (token, now) => authenticateHost(prisma, credentials, token, now), logger });
  if (!config.heartbeatRequireHostToken) logger.warn('HEARTBEAT_REQUIRE_HOST_TOKEN=false: heartbeats are accepted without a host token (benchmarks only)');
  const heartbeats = bus.subscribe(
    Topics.hostHeartbeat,
    async (hb) => {
      if (!config.heartbeatRequireHostToken) return intake(hb);
      // A check that could not run (database down) drops the beat; the next one retries.
      const accepted = await heartbeatAuth.accept(hb).catch((err: unknown) => {
        logger.warn('heartbeat dropped: its host token could not be checked', { hostId: hb.hostId, err });
        return undefined;
      });
      if (accepted) intake(hb);
      // Refused for its token: the agent refreshes at once instead of going silent until its next scheduled refresh.
      else if (accepted === false) void refusalNotices.refused(hb.hostId, 'heartbeat');
    },
    { queue: 'host-registry' },
  );
  const monitor = new LivenessMonitor({
    prisma,
    lock: openSessionLock(config.databaseUrl, MONITOR_LOCK_KEY, { applicationName: 'corral-host-registry-monitor' }),
    bus,
    health,
    logger,
    options: {
      replicaId,
      silentForMs,
      checkIntervalMs: config.livenessCheckIntervalMs,
      maxSilentShare: config.livenessBrakeSilentPercent / 100,
      minFleetForShareBrake: config.livenessBrakeMinHosts,
    },
  });
  monitor.start();
  const server = await startGrpcServer({
    host: config.grpcHost,
    port: config.grpcPort,
    logger,
    ...(serverTls ? { credentials: serverTls.credentials() } : {}),
    services: [
      {
        definition: hostRegistryV1.HostRegistryServiceService,
        implementation: hostRegistryService({
          prisma,
          logger,
          credentials,
          registrationTokenDefaultTtlSeconds: config.registrationTokenDefaultTtlSeconds,
          certificates,
          bus,
          fleetHealth: () => fleetHealth({ prisma, health, intake: direct ?? batcher, monitor }),
        }),
      },
    ],
  });
  logger.info('host-registry listening', { address: server.address, replicaId, tls: serverTls !== undefined });
  let stopped: Promise<void> | undefined;
  return {
    address: server.address,
    stop() {
      stopped ??= (async () => {
        await server.stop();
        serverTls?.stop();
        keys.stop();
        heartbeats.unsubscribe();
        await monitor.stop();
        await batcher.stop();
        offStatus();
        await bus.drain().catch(() => bus.close());
        await prisma.$disconnect();
      })();
      return stopped;
    },
  };
}
