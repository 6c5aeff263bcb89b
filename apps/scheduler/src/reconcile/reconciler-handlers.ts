import { implementUnary } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { schedulerV1 } from '@corral/proto';
import { workloadToProto } from '../workloads/workload-store';
import type { ReconcilerRequests } from './reconciler-requests';

/** The scheduler rpcs only the reconciler calls (each fenced by its epoch). */
export function reconcilerHandlers(requests: ReconcilerRequests, logger: Logger) {
  return implementUnary(
    schedulerV1.SchedulerServiceService,
    {
      async resumeTeardown(req) {
        return { workload: workloadToProto(await requests.resumeTeardown(req.id, req.reason, req.reconcilerEpoch)) };
      },
      async restartWorkload(req) {
        const { workload, restarted } = await requests.restart(req.id, req.attempt, req.reason, req.reconcilerEpoch);
        return { workload: workloadToProto(workload), restarted };
      },
      async replaceWorkload(req) {
        const { retired, replacement } = await requests.replace(req.id, req.reason, req.reconcilerEpoch);
        return { retired: workloadToProto(retired), replacement: replacement ? workloadToProto(replacement) : undefined };
      },
    },
    logger,
  );
}
