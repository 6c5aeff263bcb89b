import { workloadExtrasFromWire } from '@corral/domain';
import { implementServerStream, implementUnary } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { schedulerV1 } from '@corral/proto';
import { workloadToProto } from '../workloads/workload-store';
import type { WorkloadService } from '../workloads/workload-service';
import type { WorkloadMigration } from '../workloads/workload-migration';
import { migrationHandlers } from '../workloads/workload-migration-handlers';
import { hostImageHandlers, type HostImagesDeps } from './host-images';
import { workloadStreamHandlers } from './workload-streams';
import { serviceHandlers } from '../services/service-handlers';
import type { ServiceDeployer } from '../services/service-deployer';
import type { ServiceStore } from '../services/service-store';
import { reconcilerHandlers } from '../reconcile/reconciler-handlers';
import type { ReconcilerRequests } from '../reconcile/reconciler-requests';

const team = (teamId: string) => teamId || null;

export function schedulerService(
  workloads: WorkloadService,
  logger: Logger,
  images?: HostImagesDeps,
  reconciler?: ReconcilerRequests,
  services?: { deployer: ServiceDeployer; store: ServiceStore },
  migration?: WorkloadMigration,
) {
  return {
    ...unaryHandlers(workloads, logger),
    ...streamHandlers(workloads, logger),
    ...workloadStreamHandlers(workloads, logger),
    ...(images ? hostImageHandlers(images, logger) : {}),
    ...(reconciler ? reconcilerHandlers(reconciler, logger) : {}),
    ...(services ? serviceHandlers(services.deployer, services.store, logger) : {}),
    ...(migration ? migrationHandlers(migration, logger) : {}),
  };
}

function streamHandlers(workloads: WorkloadService, logger: Logger) {
  return implementServerStream(
    schedulerV1.SchedulerServiceService,
    {
      async *streamWorkloadLogs(req, ctx) {
        const chunks = workloads.streamLogs(req.id, team(req.teamId), { tailBytes: req.tailBytes || 1024 * 1024, follow: req.follow, signal: ctx.signal });
        for await (const data of chunks) yield { data };
      },
    },
    logger,
  );
}

function unaryHandlers(workloads: WorkloadService, logger: Logger) {
  return implementUnary(
    schedulerV1.SchedulerServiceService,
    {
      async createWorkload(req) {
        const row = await workloads.create({
          teamId: team(req.teamId),
          name: req.name,
          driver: req.driver,
          command: req.command,
          env: req.env,
          ...workloadExtrasFromWire(req),
        });
        return { workload: workloadToProto(row) };
      },
      async getWorkload(req) {
        return { workload: workloadToProto(await workloads.get(req.id, team(req.teamId))) };
      },
      async listWorkloads(req) {
        const rows = await workloads.list(team(req.teamId), { hostId: req.hostId || undefined, excludeTerminal: req.excludeTerminal });
        return { workloads: rows.map(workloadToProto) };
      },
      async stopWorkload(req) {
        return { workload: workloadToProto(await workloads.stop(req.id, team(req.teamId), req.timeoutSeconds)) };
      },
      async destroyWorkload(req) {
        return { workload: workloadToProto(await workloads.destroy(req.id, team(req.teamId), { force: req.force, timeoutSeconds: req.timeoutSeconds })) };
      },
      async restoreWorkload(req) {
        return { workload: workloadToProto(await workloads.restore(req.id, team(req.teamId), req.snapshotId, req.name)) };
      },
      async pauseWorkload(req) {
        return { workload: workloadToProto(await workloads.pause(req.id, team(req.teamId))) };
      },
      async resumeWorkload(req) {
        return { workload: workloadToProto(await workloads.resume(req.id, team(req.teamId))) };
      },
      async getWorkloadLogs(req) {
        const logs = await workloads.logs(req.id, team(req.teamId), req.tailBytes || 1024 * 1024);
        return { data: logs.data, truncated: logs.truncated };
      },
    },
    logger,
  );
}
