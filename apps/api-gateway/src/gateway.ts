import { authenticateApiKey, ensureFirstAdminKey } from '@corral/auth';
import { applyMigrations, createPrismaClient } from '@corral/db';
import { checkHealth, controlPlaneServiceCredentials, createClient, startGrpcServer, type ChannelCredentials } from '@corral/grpc';
import { createLogger, type Logger } from '@corral/logging';
import { hostRegistryV1, schedulerV1 } from '@corral/proto';
import { createImageOperations, schedulerHostImages } from './operations/image-operations';
import { createServiceOperations } from './operations/service-operations';
import { prismaIdempotencyStore } from './http/idempotency';
import { createEventOperations } from './operations/event-operations';
import { connectEventBus, natsTlsOf, Topics } from '@corral/events';
import { schedulerWorkloadStreams } from './operations/scheduler-streams';
import { adminKeyBanner, writeAdminKeyFile } from './bootstrap/admin-key-announcement';
import type { GatewayConfig } from './config';
import { corralGrpcService } from './grpc/corral-grpc-service';
import { buildHttpApp } from './http/http-app';
import { createCorralOperations } from './operations/corral-operations';

export interface RunningGateway {
  /** e.g. http://127.0.0.1:8080 */
  httpUrl: string;
  /** host:port of the public gRPC API. */
  grpcAddress: string;
  /** Set only on the start that created the first admin key. */
  adminKey?: string;
  /** Stops taking requests, then closes backend clients and the database pool. Safe to call twice. */
  stop(): Promise<void>;
}

export interface GatewayOptions {
  logger?: Logger;
  /** Where the first admin key's banner is written; stdout by default. */
  announce?: (text: string) => void;
}

const READINESS_DEADLINE_MS = 1000;

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/**
 * Starts the gateway: applies migrations, makes the first admin key on a
 * fresh database, then serves REST on httpPort and the public gRPC API on
 * grpcPort. The admin key file (if configured) is written before either
 * listener is up, so whoever waits for the gateway to be healthy finds it.
 */
export async function startGateway(config: GatewayConfig, options: GatewayOptions = {}): Promise<RunningGateway> {
  const logger = options.logger ?? createLogger({ service: 'api-gateway', level: config.logLevel });
  const announce = options.announce ?? ((text: string) => process.stdout.write(text));

  await applyMigrations(config.databaseUrl, { logger });
  const prisma = createPrismaClient(config.databaseUrl, {
    onConnectionError: (err) => logger.warn('database connection error', { err }),
  });
  const cleanups: (() => Promise<void> | void)[] = [() => prisma.$disconnect()];
  // One store for REST and the public gRPC API: a key is the caller's, whichever way it came.
  const idempotency = prismaIdempotencyStore(prisma);
  const runCleanups = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch (err) {
        logger.warn('error while stopping', { err });
      }
    }
  };

  try {
    const firstKey = await ensureFirstAdminKey(prisma);
    if (firstKey) {
      logger.info('first admin API key created', { keyId: firstKey.id, prefix: firstKey.prefix });
      // With a key file the process that asked for it shows the key; stdout
      // may well be a log file, and keys must never reach logs.
      if (config.adminKeyFile) await writeAdminKeyFile(config.adminKeyFile, firstKey.key);
      else announce(adminKeyBanner(firstKey.key));
    }

    const scheduler = createClient(schedulerV1.SchedulerServiceClient, config.schedulerAddr, { deadlineMs: config.backendDeadlineMs });
    cleanups.push(() => scheduler.close());
    const hostRegistryCredentials = controlPlaneServiceCredentials(config.hostRegistryCaFile, 'host-registry', 'HOST_REGISTRY_CA_FILE');
    if (!hostRegistryCredentials) logger.warn('calling host-registry in plaintext: HOST_REGISTRY_CA_FILE is not set');
    const hostRegistry = createClient(hostRegistryV1.HostRegistryServiceClient, config.hostRegistryAddr, { deadlineMs: config.backendDeadlineMs, credentials: hostRegistryCredentials });
    cleanups.push(() => hostRegistry.close());

    const operations = createCorralOperations({
      scheduler,
      workloadStreams: schedulerWorkloadStreams(scheduler),
      hostRegistry,
      authenticate: (key) => authenticateApiKey(prisma, key),
    });
    const images = createImageOperations(schedulerHostImages(scheduler));
    const services = createServiceOperations(scheduler);
    // The bus only wakes followers of the audit trail; without it they poll.
    const bus = config.natsUrl
      ? await connectEventBus({
          url: config.natsUrl,
          name: 'corral-api-gateway',
          logger,
          tls: natsTlsOf(config),
          namespace: config.natsSubjectNamespace,
        })
      : undefined;
    if (bus) cleanups.push(() => bus.drain().catch(() => bus.close()));
    const events = createEventOperations(prisma, {
      ...(bus
        ? {
            doorbell: (ring) => {
              const subscription = bus.subscribe(Topics.audit, () => ring());
              return () => subscription.unsubscribe();
            },
          }
        : {}),
    });

    const serving = (address: string, credentials?: ChannelCredentials) =>
      checkHealth(address, '', { deadlineMs: READINESS_DEADLINE_MS, credentials }).then(
        (status) => status === 'SERVING',
        () => false,
      );
    const http = await buildHttpApp({
      operations,
      logger,
      bodyLimitBytes: config.bodyLimitBytes,
      fileMaxBytes: config.fileMaxBytes,
      images,
      imageMaxBytes: config.imageMaxBytes,
      requestTimeoutMs: config.requestTimeoutMs,
      uploadTimeoutMs: config.uploadTimeoutMs,
      services,
      events,
      idempotency,
      readiness: async () => {
        const [database, schedulerUp, hostRegistryUp] = await Promise.all([
          prisma.$queryRaw`SELECT 1`.then(
            () => true,
            () => false,
          ),
          serving(config.schedulerAddr),
          serving(config.hostRegistryAddr, hostRegistryCredentials),
        ]);
        return { database, scheduler: schedulerUp, hostRegistry: hostRegistryUp };
      },
    });
    cleanups.push(() => http.close());
    await http.listen({ host: config.httpHost, port: config.httpPort });
    const bound = http.server.address();
    const httpPort = typeof bound === 'object' && bound ? bound.port : config.httpPort;
    const httpUrl = `http://${urlHost(config.httpHost)}:${httpPort}`;

    const grpc = await startGrpcServer({
      host: config.grpcHost,
      port: config.grpcPort,
      logger,
      services: [corralGrpcService(operations, logger, { fileMaxBytes: config.fileMaxBytes, images, imageMaxBytes: config.imageMaxBytes, services, events, idempotency })],
    });
    cleanups.push(() => grpc.stop());

    logger.info('api-gateway listening', { httpUrl, grpcAddress: grpc.address });
    let stopping: Promise<void> | undefined;
    return {
      httpUrl,
      grpcAddress: grpc.address,
      ...(firstKey ? { adminKey: firstKey.key } : {}),
      stop() {
        stopping ??= runCleanups();
        return stopping;
      },
    };
  } catch (err) {
    await runCleanups();
    throw err;
  }
}
