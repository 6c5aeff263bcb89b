import { applyMigrations, createPrismaClient } from '@corral/db';
import { connectEventBus, CredentialRefusalNotifier, natsTlsOf } from '@corral/events';
import { controlPlaneServiceCredentials, loadAgentTlsMaterial, startGrpcServer } from '@corral/grpc';
import { createLogger, type Logger } from '@corral/logging';
import { schedulerV1 } from '@corral/proto';
import { AgentPool } from './agents/agent-pool';
import type { SchedulerConfig } from './config';
import { hostRegistryJwks, hostTokenVerifier } from './events/host-registry-jwks';
import { applyWorkloadStateEvents, knownHostVia, recordedHostOf } from './events/workload-state-events';
import { WorkloadStateAuthenticator } from './events/workload-state-authenticator';
import { schedulerService } from './grpc/scheduler-service';
import { hostRegistryDirectory } from './hosts/host-directory';
import { evictDeletedHostClients, watchHostStatus } from './hosts/host-status-watcher';
import { postgresAllocationLedger } from './placement/allocation-ledger';
import { PlacementService } from './placement/placement-service';
import { ReconcilerRequests } from './reconcile/reconciler-requests';
import { networkHealthProbe } from './services/health-probe';
import { unavailableSecretResolver } from './services/secret-resolver';
import { ServiceDeployer } from './services/service-deployer';
import { ServiceStore } from './services/service-store';
import { WorkloadMigration } from './workloads/workload-migration';
import { WorkloadService } from './workloads/workload-service';
import { WorkloadStore } from './workloads/workload-store';

export interface RunningScheduler {
  address: string;
  stop(): Promise<void>;
}

export async function startScheduler(config: SchedulerConfig, logger: Logger = createLogger({ service: 'scheduler', level: config.logLevel })): Promise<RunningScheduler> {
  const agentTls = loadAgentTlsMaterial(config, { logger });
  if (!agentTls) logger.warn('calling node agents in plaintext: AGENT_TLS_CA_FILE / AGENT_TLS_CERT_FILE / AGENT_TLS_KEY_FILE are not set');
  await applyMigrations(config.databaseUrl, { logger });
  const prisma = createPrismaClient(config.databaseUrl);
  const store = new WorkloadStore(prisma);
  const hostRegistryCredentials = controlPlaneServiceCredentials(config.hostRegistryCaFile, 'host-registry', 'HOST_REGISTRY_CA_FILE');
  if (!hostRegistryCredentials) logger.warn('calling host-registry in plaintext: HOST_REGISTRY_CA_FILE is not set');
  const hosts = hostRegistryDirectory(config.hostRegistryAddr, undefined, hostRegistryCredentials);
  const agents = new AgentPool({ deadlineMs: config.agentCallDeadlineMs, tls: agentTls });
  // The one placement path (placement/): durable reservations in the workload rows, under per-host advisory locks.
  const placement = new PlacementService({ hosts, ledger: postgresAllocationLedger(prisma), logger, defaultStrategy: config.placementStrategy });
  const workloads = new WorkloadService(store, hosts, agents, logger, config.defaultStopTimeoutSeconds, placement);
  const serviceStore = new ServiceStore(prisma);
  const deployer = new ServiceDeployer({
    store: serviceStore,
    workloads,
    hosts,
    placement,
    health: networkHealthProbe(agents),
    secrets: unavailableSecretResolver,
    logger,
    stopTimeoutSeconds: config.defaultStopTimeoutSeconds,
  });

  const bus = await connectEventBus({
    url: config.natsUrl,
    name: 'corral-scheduler',
    logger,
    tls: natsTlsOf(config),
    namespace: config.natsSubjectNamespace,
  });
  // State changes count only with their host's JWT, checked against host-registry's published keys.
  const jwks = hostRegistryJwks(config.hostRegistryAddr, { credentials: hostRegistryCredentials });
  if (!config.requireHostToken) logger.warn('SCHEDULER_REQUIRE_HOST_TOKEN=false: workload state events are applied without a host token');
  const stateChanges = applyWorkloadStateEvents({
    bus,
    workloads,
    logger,
    authenticator: config.requireHostToken
      ? new WorkloadStateAuthenticator({ authenticate: hostTokenVerifier(jwks.fetch), placedOn: recordedHostOf(store), logger })
      : undefined,
    refusalNotices: new CredentialRefusalNotifier({ bus, refusedBy: 'scheduler', isKnownHost: knownHostVia(hosts), logger }),
  });
  // Lost hosts' workloads become missing; returning hosts' reports restore them.
  watchHostStatus({ bus, prisma, store, hosts, logger });
  // Every replica drops a deleted host's client from its own pool.
  evictDeletedHostClients({ bus, hosts, agents, logger });

  const server = await startGrpcServer({
    host: config.grpcHost,
    port: config.grpcPort,
    logger,
    services: [{ definition: schedulerV1.SchedulerServiceService, implementation: schedulerService(workloads, logger, { hosts, agents }, new ReconcilerRequests({ prisma, store, workloads, hosts, agents, logger }), { deployer, store: serviceStore }, new WorkloadMigration({ store, workloads, hosts, logger, stopTimeoutSeconds: config.defaultStopTimeoutSeconds })) }],
  });
  logger.info('scheduler listening', { address: server.address });
  // Rollouts whose scheduler died are continued by whichever replica claims them first.
  const stopWatchingRollouts = deployer.watchAbandoned();
  let stopped: Promise<void> | undefined;
  return {
    address: server.address,
    stop() {
      stopped ??= (async () => {
        stopWatchingRollouts();
        await server.stop();
        stateChanges.unsubscribe();
        await bus.drain().catch(() => bus.close());
        agents.closeAll();
        hosts.close();
        jwks.close();
        await prisma.$disconnect();
      })();
      return stopped;
    },
  };
}
