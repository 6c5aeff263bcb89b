import { InvalidArgumentError, InternalError, SERVICE_LIMITS, UnavailableError, parseServiceDefinition } from '@corral/domain';
import type { PromiseClient } from '@corral/grpc';
import type { schedulerV1 } from '@corral/proto';
import { teamScopeOf } from './caller';
import type { OperationContext } from './corral-operations';

// Service deploys from TOML definitions, shared by REST and public gRPC:
// the definition is parsed here too, so a bad file is a 400 naming the
// path (`components[1].routes[0].port`) before any backend is asked; the
// caller's team goes to the scheduler, which owns services.

export type ServicesPort = Pick<
  PromiseClient<schedulerV1.SchedulerServiceClient>,
  'planService' | 'deployService' | 'getService' | 'listServices' | 'stopService' | 'undeployService' | 'purgeComponents'
>;

export const SERVICE_NAME_PATTERN = '^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$';
const serviceName = new RegExp(SERVICE_NAME_PATTERN);
/** A forced teardown of every instance takes a while: each stop has its grace period. */
const UNDEPLOY_DEADLINE_MS = 120_000;

export interface DeployOutcome {
  service: schedulerV1.Service;
  deployment?: schedulerV1.ServiceDeployment;
  plan: schedulerV1.ServicePlan;
}

export interface PurgeOutcome {
  dryRun: boolean;
  purged: schedulerV1.PurgedComponent[];
  refused: schedulerV1.PurgedComponent[];
  serviceDeleted: boolean;
}

export interface ServiceOperations {
  planService(ctx: OperationContext, toml: string): Promise<schedulerV1.ServicePlan>;
  /** Records the next version and starts its rollout; answers before the rollout ends (follow it with getService). */
  deployService(ctx: OperationContext, toml: string): Promise<DeployOutcome>;
  getService(ctx: OperationContext, name: string): Promise<schedulerV1.Service>;
  listServices(ctx: OperationContext): Promise<schedulerV1.Service[]>;
  stopService(ctx: OperationContext, name: string): Promise<schedulerV1.Service>;
  undeployService(ctx: OperationContext, name: string): Promise<schedulerV1.Service>;
  purgeComponents(ctx: OperationContext, name: string, dryRun: boolean): Promise<PurgeOutcome>;
}

function checkName(name: string): string {
  if (typeof name !== 'string' || !serviceName.test(name)) throw new InvalidArgumentError('name must be a service name (a DNS label)', { field: 'name' });
  return name;
}

/** Parses only to check: the scheduler parses again (a gRPC caller of the scheduler skips the gateway). */
function checkDefinition(toml: string): string {
  if (typeof toml !== 'string' || toml.trim() === '') throw new InvalidArgumentError('definition must be the TOML text of a service definition', { field: 'definition' });
  if (toml.length > SERVICE_LIMITS.fileMaxLength) throw new InvalidArgumentError(`definition is longer than ${SERVICE_LIMITS.fileMaxLength} characters`, { field: 'definition' });
  parseServiceDefinition(toml);
  return toml;
}

function present<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new InternalError(`backend answered without ${what}`);
  return value;
}

export function createServiceOperations(port: ServicesPort | undefined): ServiceOperations {
  const scheduler = () => {
    if (!port) throw new UnavailableError('services are not available');
    return port;
  };
  const opts = (ctx: OperationContext, deadlineMs?: number) => ({ ...(ctx.signal ? { signal: ctx.signal } : {}), ...(deadlineMs ? { deadlineMs } : {}) });
  return {
    async planService(ctx, toml) {
      const res = await scheduler().planService({ teamId: teamScopeOf(ctx.caller), definitionToml: checkDefinition(toml) }, opts(ctx));
      return present(res.plan, 'a plan');
    },
    async deployService(ctx, toml) {
      const res = await scheduler().deployService({ teamId: teamScopeOf(ctx.caller), definitionToml: checkDefinition(toml), wait: false }, opts(ctx));
      return { service: present(res.service, 'a service'), ...(res.deployment ? { deployment: res.deployment } : {}), plan: present(res.plan, 'a plan') };
    },
    async getService(ctx, name) {
      const res = await scheduler().getService({ teamId: teamScopeOf(ctx.caller), name: checkName(name) }, opts(ctx));
      return present(res.service, 'a service');
    },
    async listServices(ctx) {
      return (await scheduler().listServices({ teamId: teamScopeOf(ctx.caller) }, opts(ctx))).services;
    },
    async stopService(ctx, name) {
      const res = await scheduler().stopService({ teamId: teamScopeOf(ctx.caller), name: checkName(name), timeoutSeconds: 0 }, opts(ctx, UNDEPLOY_DEADLINE_MS));
      return present(res.service, 'a service');
    },
    async undeployService(ctx, name) {
      const res = await scheduler().undeployService({ teamId: teamScopeOf(ctx.caller), name: checkName(name), timeoutSeconds: 0 }, opts(ctx, UNDEPLOY_DEADLINE_MS));
      return present(res.service, 'a service');
    },
    async purgeComponents(ctx, name, dryRun) {
      const res = await scheduler().purgeComponents({ teamId: teamScopeOf(ctx.caller), name: checkName(name), dryRun }, opts(ctx));
      return { dryRun: res.dryRun, purged: res.purged, refused: res.refused, serviceDeleted: res.serviceDeleted };
    },
  };
}
