import { implementUnary } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { schedulerV1 } from '@corral/proto';
import type { WorkloadMigration } from './workload-migration';

/** MigrateHostWorkloads: drain that moves a host's workloads away (workload-migration.ts). */
export function migrationHandlers(migration: WorkloadMigration, logger: Logger) {
  return implementUnary(
    schedulerV1.SchedulerServiceService,
    {
      async migrateHostWorkloads(req) {
        const results = await migration.migrateHost(req.hostId, req.teamId || null, {
          maxParallel: req.maxParallel || 1,
          ...(req.readyTimeoutSeconds ? { readyTimeoutMs: req.readyTimeoutSeconds * 1000 } : {}),
        });
        return {
          migrations: results.map((r) => ({
            workloadId: r.workloadId,
            name: r.name,
            outcome: r.outcome,
            replacementId: r.replacementId ?? '',
            toHostId: r.toHostId ?? '',
            reason: r.reason,
          })),
        };
      },
    },
    logger,
  );
}
