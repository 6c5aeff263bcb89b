import { hostname } from 'node:os';
import { applyMigrations, createPrismaClient, openSessionLock } from '@corral/db';
import { connectEventBus, natsTlsOf } from '@corral/events';
import { controlPlaneServiceCredentials, createClient, loadAgentTlsMaterial, startGrpcServer } from '@corral/grpc';
import { createLogger, type Logger } from '@corral/logging';
import { hostRegistryV1, schedulerV1 } from '@corral/proto';
import { AuditRecorder } from './audit/audit-recorder';
import type { ReconcilerConfig } from './config';
import { Executor } from './execute/executor';
import { RECONCILER_LOCK_KEY, ReconcilerLeadership } from './leadership/reconciler-leadership';
import { AgentClients } from './observe/agent-clients';
import { Observer } from './observe/observer';
import { ReconcileLoop } from './reconcile-loop';

export interface RunningReconciler {
  address: string;
  replicaId: string;
  loop: ReconcileLoop;
  leadership: ReconcilerLeadership;
  stop(): Promise<void>;
}

/**
 * The reconciler: every replica runs the loop, only the holder of the
 * advisory lock acts. It owns no tables' migrations (the scheduler and
 * gateway apply them) but reads and fences against them.
 */
export async function startReconciler(config: ReconcilerConfig, logger: Logger = createLogger({ service: 'reconciler', level: config.logLevel })): Promise<RunningReconciler> {
  const replicaId = config.replicaId ?? `${hostname()}-${process.pid}`;
  const tls = loadAgentTlsMaterial(config, { logger });
  if (!tls) logger.warn('calling node agents in plaintext: AGENT_TLS_CA_FILE / AGENT_TLS_CERT_FILE / AGENT_TLS_KEY_FILE are not set');
  // Applied by whichever service starts first, under an advisory lock.
  await applyMigrations(config.databaseUrl, { logger });
  const prisma = createPrismaClient(config.databaseUrl, { maxConnections: 4 });
  const bus = await connectEventBus({
    url: config.natsUrl,
    name: `corral-reconciler-${replicaId}`,
    logger,
    tls: natsTlsOf(config),
    namespace: config.natsSubjectNamespace,
  });
  const agents = new AgentClients({ deadlineMs: config.agentCallDeadlineMs, tls });
  const hostRegistryCredentials = controlPlaneServiceCredentials(config.hostRegistryCaFile, 'host-registry', 'HOST_REGISTRY_CA_FILE');
  const hostRegistry = createClient(hostRegistryV1.HostRegistryServiceClient, config.hostRegistryAddr, { deadlineMs: 5000, credentials: hostRegistryCredentials });
  const scheduler = createClient(schedulerV1.SchedulerServiceClient, config.schedulerAddr, { deadlineMs: config.schedulerCallDeadlineMs });
  const leadership = new ReconcilerLeadership({
    prisma,
    lock: openSessionLock(config.databaseUrl, RECONCILER_LOCK_KEY, { applicationName: `corral-reconciler-${replicaId}` }),
    replicaId,
    logger,
  });
  const loop = new ReconcileLoop({
    leadership,
    observer: new Observer({ prisma, hostRegistry, agents, logger }),
    executor: new Executor({ prisma, scheduler, agents, logger }),
    audit: new AuditRecorder({ prisma, bus, actor: `reconciler/${replicaId}`, logger }),
    policy: {
      intentGraceMs: config.intentGraceMs,
      provisioningTimeoutMs: config.provisioningTimeoutMs,
      reportFreshnessMs: config.reportFreshnessMs,
      maxActions: config.maxActionsPerRound,
    },
    intervalMs: config.intervalMs,
    logger,
  });
  const server = await startGrpcServer({ host: config.grpcHost, port: config.grpcPort, logger, services: [] });
  loop.start();
  logger.info('reconciler running', { address: server.address, replicaId, intervalMs: config.intervalMs });
  let stopped: Promise<void> | undefined;
  return {
    address: server.address,
    replicaId,
    loop,
    leadership,
    stop() {
      stopped ??= (async () => {
        await loop.stop();
        await server.stop();
        await leadership.close();
        agents.closeAll();
        hostRegistry.close();
        scheduler.close();
        await bus.drain().catch(() => bus.close());
        await prisma.$disconnect();
      })();
      return stopped;
    },
  };
}
