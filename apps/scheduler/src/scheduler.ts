import { applyMigrations, createPrismaClient } from '@corral/db';
import { instanceStateFromProto } from '@corral/domain';
import { connectEventBus, Topics } from '@corral/events';
import { startGrpcServer } from '@corral/grpc';
import { createLogger, type Logger } from '@corral/logging';
import { schedulerV1 } from '@corral/proto';
import { AgentPool } from './agents/agent-pool';
import { loadAgentTlsMaterial } from './agents/agent-tls';
import type { SchedulerConfig } from './config';
import { schedulerService } from './grpc/scheduler-service';
import { hostRegistryDirectory } from './hosts/host-directory';
import { evictDeletedHostClients, watchHostStatus } from './hosts/host-status-watcher';
import { WorkloadService } from './workloads/workload-service';
import { WorkloadStore } from './workloads/workload-store';

export interface RunningScheduler {
  address: string;
  stop(): Promise<void>;
}

export async function startScheduler(config: SchedulerConfig, logger: Logger = createLogger({ service: 'scheduler', level: config.logLevel })): Promise<RunningScheduler> {
  const agentTls = loadAgentTlsMaterial(config);
  if (!agentTls) logger.warn('calling node agents in plaintext: AGENT_TLS_CA_FILE / AGENT_TLS_CERT_FILE / AGENT_TLS_KEY_FILE are not set');
  await applyMigrations(config.databaseUrl, { logger });
  const prisma = createPrismaClient(config.databaseUrl);
  const store = new WorkloadStore(prisma);
  const hosts = hostRegistryDirectory(config.hostRegistryAddr);
  const agents = new AgentPool({ deadlineMs: config.agentCallDeadlineMs, tls: agentTls });
  const workloads = new WorkloadService(store, hosts, agents, logger, config.defaultStopTimeoutSeconds);

  const bus = await connectEventBus({ url: config.natsUrl, name: 'corral-scheduler', logger });
  const stateChanges = bus.subscribe(
    Topics.workloadState,
    async (event) => {
      const applied = await workloads.applyEvent(event.workloadId, {
        seq: event.seq,
        state: instanceStateFromProto(event.state),
        exited: event.exited,
        exitCode: event.exitCode,
        reason: event.reason,
      });
      logger.debug('workload state event', { workloadId: event.workloadId, seq: event.seq, state: event.state, applied });
    },
    { queue: 'scheduler' },
  );
  // Lost hosts' workloads become missing; returning hosts' reports restore them.
  watchHostStatus({ bus, prisma, store, hosts, logger });
  // Every replica drops a deleted host's client from its own pool.
  evictDeletedHostClients({ bus, hosts, agents, logger });

  const server = await startGrpcServer({
    host: config.grpcHost,
    port: config.grpcPort,
    logger,
    services: [{ definition: schedulerV1.SchedulerServiceService, implementation: schedulerService(workloads, logger, { hosts, agents }) }],
  });
  logger.info('scheduler listening', { address: server.address });
  let stopped: Promise<void> | undefined;
  return {
    address: server.address,
    stop() {
      stopped ??= (async () => {
        await server.stop();
        stateChanges.unsubscribe();
        await bus.drain().catch(() => bus.close());
        agents.closeAll();
        hosts.close();
        await prisma.$disconnect();
      })();
      return stopped;
    },
  };
}
