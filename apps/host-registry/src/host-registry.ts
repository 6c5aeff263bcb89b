import { applyMigrations, createPrismaClient } from '@corral/db';
import { connectEventBus, Topics } from '@corral/events';
import { startGrpcServer } from '@corral/grpc';
import { createLogger, type Logger } from '@corral/logging';
import { hostRegistryV1 } from '@corral/proto';
import type { HostRegistryConfig } from './config';
import type { CredentialPolicy } from './credentials/host-credentials';
import { SealedBox } from './credentials/sealed-box';
import { DEFAULT_ROTATION, HostKeyStore } from './credentials/signing-keys';
import { hostRegistryService } from './grpc/host-registry-service';
import { heartbeatHandler } from './heartbeats/heartbeat-intake';
import { startLivenessMonitor } from './heartbeats/liveness-monitor';

const KEY_CHECK_INTERVAL_MS = 60_000;

export interface RunningHostRegistry {
  address: string;
  stop(): Promise<void>;
}

export async function startHostRegistry(config: HostRegistryConfig, logger: Logger = createLogger({ service: 'host-registry', level: config.logLevel })): Promise<RunningHostRegistry> {
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
  const bus = await connectEventBus({ url: config.natsUrl, name: 'corral-host-registry', logger });
  // Replicas share the queue group, so each heartbeat is applied once.
  const heartbeats = bus.subscribe(Topics.hostHeartbeat, heartbeatHandler(prisma, logger), { queue: 'host-registry' });
  const monitor = startLivenessMonitor(prisma, logger, {
    intervalMs: Math.max(100, Math.floor(config.heartbeatIntervalMs / 2)),
    silentForMs: config.heartbeatIntervalMs * config.missedHeartbeatsBeforeUnreachable,
  });
  const server = await startGrpcServer({
    host: config.grpcHost,
    port: config.grpcPort,
    logger,
    services: [
      {
        definition: hostRegistryV1.HostRegistryServiceService,
        implementation: hostRegistryService({
          prisma,
          logger,
          credentials,
          registrationTokenDefaultTtlSeconds: config.registrationTokenDefaultTtlSeconds,
        }),
      },
    ],
  });
  logger.info('host-registry listening', { address: server.address });
  let stopped: Promise<void> | undefined;
  return {
    address: server.address,
    stop() {
      stopped ??= (async () => {
        await server.stop();
        keys.stop();
        heartbeats.unsubscribe();
        await monitor.stop();
        await bus.drain().catch(() => bus.close());
        await prisma.$disconnect();
      })();
      return stopped;
    },
  };
}
