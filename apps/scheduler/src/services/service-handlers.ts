import { implementUnary } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { schedulerV1 } from '@corral/proto';
import type { ServiceDeployer } from './service-deployer';
import type { ServiceStore } from './service-store';
import { deploymentToProto, planToProto, serviceToProto } from './service-views';

// The scheduler's service rpcs. `team_id` '' is the platform (admin keys);
// a team only ever sees its own services.

const team = (teamId: string) => teamId || null;

export function serviceHandlers(deployer: ServiceDeployer, store: ServiceStore, logger: Logger) {
  const detailed = async (teamId: string | null, name: string) => {
    const { service, ...detail } = await store.detail(teamId, name);
    return serviceToProto(service, detail);
  };
  return implementUnary(
    schedulerV1.SchedulerServiceService,
    {
      async planService(req) {
        const { plan, fromVersion } = await deployer.plan(team(req.teamId), req.definitionToml);
        return { plan: planToProto(plan, fromVersion) };
      },
      async deployService(req) {
        const result = await deployer.deploy(team(req.teamId), req.definitionToml, { wait: req.wait });
        return {
          service: await detailed(team(req.teamId), result.service.name),
          deployment: result.deployment ? deploymentToProto(result.deployment) : undefined,
          plan: planToProto(result.plan, result.deployment?.fromVersion ?? result.service.currentVersion),
        };
      },
      async getService(req) {
        return { service: await detailed(team(req.teamId), req.name) };
      },
      async listServices(req) {
        const rows = await store.list(team(req.teamId));
        const services = await Promise.all(rows.map(async (row) => serviceToProto(row, { latestDeployment: await store.latestDeployment(row.id) })));
        return { services };
      },
      async stopService(req) {
        const row = await deployer.stop(team(req.teamId), req.name, req.timeoutSeconds);
        return { service: await detailed(team(req.teamId), row.name) };
      },
      async undeployService(req) {
        const row = await deployer.undeploy(team(req.teamId), req.name, req.timeoutSeconds);
        return { service: await detailed(team(req.teamId), row.name) };
      },
      async purgeComponents(req) {
        return deployer.purge(team(req.teamId), req.name, req.dryRun);
      },
    },
    logger,
  );
}
