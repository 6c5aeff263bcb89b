import { UnavailableError } from '@corral/domain';
import { schedulerV1 } from '@corral/proto';
import type { ServicesPort } from '../operations/service-operations';

/** A scripted scheduler for the service rpcs: records deploys and purges; `gate` holds a deploy, `failNext` fails one. */
export class FakeServices implements Pick<ServicesPort, keyof ServicesPort> {
  deploys: schedulerV1.DeployServiceRequest[] = [];
  purges: schedulerV1.PurgeComponentsRequest[] = [];
  /** When set, deployService waits for it. */
  gate?: Promise<void>;
  failNext = false;

  private service = (name: string, teamId: string) => schedulerV1.Service.fromPartial({ id: `svc-${this.deploys.length}`, name, teamId, currentVersion: 0, state: 'deploying' });

  async planService(req: schedulerV1.PlanServiceRequest) {
    return { plan: schedulerV1.ServicePlan.fromPartial({ service: 'shop', action: 'create', toDigest: 'sha256:x', summary: [`plan for ${req.teamId}`] }) };
  }
  async deployService(req: schedulerV1.DeployServiceRequest) {
    if (this.failNext) {
      this.failNext = false;
      throw new UnavailableError('scheduler down');
    }
    this.deploys.push(req);
    await this.gate;
    return {
      service: this.service('shop', req.teamId),
      deployment: schedulerV1.ServiceDeployment.fromPartial({ id: `dep-${this.deploys.length}`, fromVersion: 0, toVersion: 1, state: 'running' }),
      plan: schedulerV1.ServicePlan.fromPartial({ service: 'shop', action: 'create', toDigest: 'sha256:x' }),
    };
  }
  async getService(req: schedulerV1.GetServiceRequest) {
    return { service: this.service(req.name, req.teamId) };
  }
  async listServices(req: schedulerV1.ListServicesRequest) {
    return { services: [this.service('shop', req.teamId)] };
  }
  async stopService(req: schedulerV1.StopServiceRequest) {
    return { service: { ...this.service(req.name, req.teamId), state: 'stopped' } };
  }
  async undeployService(req: schedulerV1.UndeployServiceRequest) {
    return { service: { ...this.service(req.name, req.teamId), state: 'removed' } };
  }
  async purgeComponents(req: schedulerV1.PurgeComponentsRequest) {
    this.purges.push(req);
    return { dryRun: req.dryRun, purged: [{ name: 'worker', reason: 'in no current definition' }], refused: [], serviceDeleted: false };
  }
}
