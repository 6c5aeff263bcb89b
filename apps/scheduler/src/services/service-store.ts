import { FailedPreconditionError, NotFoundError, type InstanceState, type ServiceDefinition } from '@corral/domain';
import {
  Prisma,
  type Deployment as DeploymentRow,
  type PrismaClient,
  type Service as ServiceRow,
  type ServiceComponent as ServiceComponentRow,
  type ServiceVersion as ServiceVersionRow,
  type Workload as WorkloadRow,
} from '@corral/db';
import type { ServiceInstanceRecord } from './rollout';
import { SERVICE_STATE_FIELD } from './service-errors';

// Durable state of service deploys: services (name unique per team),
// their versions (definition + TOML source), rollouts and the component
// registry. Instances are workload rows (workload-store.ts) with
// service_id / component_name / instance_index / service_version.

export interface DeploymentProgress {
  stepsTotal: number;
  stepsDone: number;
  events: string[];
}

/** Most events kept per rollout: enough to follow it, bounded for the row. */
const EVENTS_MAX = 200;

export const teamScope = (teamId: string | null) => teamId ?? '';

export function progressOf(row: DeploymentRow): DeploymentProgress {
  const p = (row.progress ?? {}) as Partial<DeploymentProgress>;
  return { stepsTotal: p.stepsTotal ?? 0, stepsDone: p.stepsDone ?? 0, events: Array.isArray(p.events) ? p.events : [] };
}

export function instanceRecord(row: WorkloadRow): ServiceInstanceRecord {
  return {
    workloadId: row.id,
    component: row.componentName ?? '',
    index: row.instanceIndex ?? 0,
    version: row.serviceVersion ?? 0,
    state: row.state as InstanceState,
    hostId: row.hostId,
    createdAt: row.createdAt,
  };
}

export interface BegunDeployment {
  service: ServiceRow;
  version: ServiceVersionRow;
  deployment: DeploymentRow;
  /** The version running before (0: none). */
  previousVersion: number;
}

export class ServiceStore {
  /** A running rollout that has not moved for this long is taken to be dead (its scheduler went away). */
  constructor(
    private readonly prisma: PrismaClient,
    private readonly staleRolloutMs = 15 * 60_000,
  ) {}

  /** Another team's service is reported as not found. */
  async find(teamId: string | null, name: string): Promise<ServiceRow> {
    const row = await this.findOrNull(teamId, name);
    if (!row) throw new NotFoundError(`service ${name} not found`);
    return row;
  }

  findOrNull(teamId: string | null, name: string): Promise<ServiceRow | null> {
    return this.prisma.service.findUnique({ where: { teamScope_name: { teamScope: teamScope(teamId), name } } });
  }

  /**
   * A service with its versions, instances, latest rollout and components,
   * all read from one snapshot: read one after another, a rollout finishing
   * in between showed "succeeded" beside a service still "deploying".
   */
  detail(teamId: string | null, name: string) {
    return this.prisma.$transaction(
      async (tx) => {
        const service = await tx.service.findUnique({ where: { teamScope_name: { teamScope: teamScope(teamId), name } } });
        if (!service) throw new NotFoundError(`service ${name} not found`);
        const versions = await tx.serviceVersion.findMany({ where: { serviceId: service.id }, orderBy: { version: 'desc' }, take: 100 });
        const instances = await tx.workload.findMany({
          where: { serviceId: service.id, state: { not: 'retired' } },
          orderBy: [{ componentName: 'asc' }, { instanceIndex: 'asc' }, { createdAt: 'asc' }],
        });
        const latestDeployment = await tx.deployment.findFirst({ where: { serviceId: service.id }, orderBy: { createdAt: 'desc' } });
        const components = await tx.serviceComponent.findMany({ where: { serviceId: service.id }, orderBy: { name: 'asc' } });
        return { service, versions, instances, latestDeployment, components };
      },
      { isolationLevel: 'RepeatableRead' },
    );
  }

  /** Admin (null team): every team's services. */
  list(teamId: string | null): Promise<ServiceRow[]> {
    return this.prisma.service.findMany({ where: teamId ? { teamId } : {}, orderBy: { name: 'asc' }, take: 1000 });
  }

  async definition(serviceId: string, version: number): Promise<ServiceDefinition | undefined> {
    const row = await this.prisma.serviceVersion.findUnique({ where: { serviceId_version: { serviceId, version } } });
    return row ? (row.definition as unknown as ServiceDefinition) : undefined;
  }

  versions(serviceId: string): Promise<ServiceVersionRow[]> {
    return this.prisma.serviceVersion.findMany({ where: { serviceId }, orderBy: { version: 'desc' }, take: 100 });
  }

  latestDeployment(serviceId: string): Promise<DeploymentRow | null> {
    return this.prisma.deployment.findFirst({ where: { serviceId }, orderBy: { createdAt: 'desc' } });
  }

  components(serviceId: string): Promise<ServiceComponentRow[]> {
    return this.prisma.serviceComponent.findMany({ where: { serviceId }, orderBy: { name: 'asc' } });
  }

  /** Every instance that has not been retired, oldest first. */
  instances(serviceId: string): Promise<WorkloadRow[]> {
    return this.prisma.workload.findMany({ where: { serviceId, state: { not: 'retired' } }, orderBy: [{ componentName: 'asc' }, { instanceIndex: 'asc' }, { createdAt: 'asc' }] });
  }

  /** Every instance of one component, retired ones included. */
  componentWorkloads(serviceId: string, component: string): Promise<WorkloadRow[]> {
    return this.prisma.workload.findMany({ where: { serviceId, componentName: component } });
  }

  /** The rollout of this service that is still moving, if any. */
  async activeRollout(serviceId: string): Promise<DeploymentRow | null> {
    return this.prisma.deployment.findFirst({ where: { serviceId, state: 'running', updatedAt: { gt: new Date(Date.now() - this.staleRolloutMs) } }, orderBy: { createdAt: 'desc' } });
  }

  /**
   * Records `definition` as the next version of its service (created on
   * first deploy) and opens a rollout to it. Serialised per service by an
   * advisory lock, so two deploys of one service never both proceed: the
   * second sees the first's running rollout and is refused.
   */
  async beginDeployment(teamId: string | null, definition: ServiceDefinition, source: string, digest: string): Promise<BegunDeployment> {
    const scope = teamScope(teamId);
    return this.prisma.$transaction(async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext(${`corral.service:${scope}:${definition.name}`}))`;
      let service = await tx.service.findUnique({ where: { teamScope_name: { teamScope: scope, name: definition.name } } });
      service ??= await tx.service.create({ data: { name: definition.name, teamId, teamScope: scope, state: 'deploying' } });
      const running = await tx.deployment.findFirst({ where: { serviceId: service.id, state: 'running' }, orderBy: { createdAt: 'desc' } });
      if (running) {
        if (running.updatedAt.getTime() > Date.now() - this.staleRolloutMs) {
          throw new FailedPreconditionError(`service ${definition.name} is being rolled out to version ${running.toVersion} (deployment ${running.id}); wait for it to end`, { field: SERVICE_STATE_FIELD });
        }
        await tx.deployment.update({ where: { id: running.id }, data: { state: 'interrupted', reason: 'the rollout stopped moving (its scheduler went away)' } });
        await tx.serviceVersion.updateMany({ where: { serviceId: service.id, version: running.toVersion, status: 'deploying' }, data: { status: 'failed' } });
      }
      const last = await tx.serviceVersion.findFirst({ where: { serviceId: service.id }, orderBy: { version: 'desc' } });
      const number = (last?.version ?? 0) + 1;
      const version = await tx.serviceVersion.create({
        data: { serviceId: service.id, version: number, definition: JSON.parse(JSON.stringify(definition)), source, digest, status: 'deploying' },
      });
      const previousVersion = service.state === 'removed' ? 0 : service.currentVersion;
      const deployment = await tx.deployment.create({
        data: { serviceId: service.id, fromVersion: previousVersion, toVersion: number, state: 'running', progress: { stepsTotal: 0, stepsDone: 0, events: [] } },
      });
      service = await tx.service.update({ where: { id: service.id }, data: { state: 'deploying' } });
      // Registered now, so instances a failed rollout leaves behind can be found and purged.
      for (const c of definition.components) {
        await tx.serviceComponent.upsert({
          where: { serviceId_name: { serviceId: service.id, name: c.name } },
          create: { serviceId: service.id, name: c.name, state: 'active', lastVersion: number },
          update: { state: 'active', lastVersion: number },
        });
      }
      return { service, version, deployment, previousVersion };
    });
  }

  /** Keeps a running rollout's lease: its row moved recently, so no other replica takes it over. */
  async touchRollout(deploymentId: string): Promise<void> {
    await this.prisma.deployment.updateMany({ where: { id: deploymentId, state: 'running' }, data: { updatedAt: new Date() } });
  }

  /**
   * Takes over running rollouts whose lease ran out (not touched for
   * `leaseMs`: their scheduler went away). Each is claimed by a guarded
   * UPDATE that renews the lease only while it is still expired, so of
   * replicas sweeping at the same moment exactly one wins a rollout.
   */
  async claimAbandonedRollouts(leaseMs: number): Promise<(DeploymentRow & { service: ServiceRow })[]> {
    const expired = () => new Date(Date.now() - leaseMs);
    const candidates = await this.prisma.deployment.findMany({ where: { state: 'running', updatedAt: { lt: expired() } }, include: { service: true }, orderBy: { createdAt: 'asc' } });
    const claimed: (DeploymentRow & { service: ServiceRow })[] = [];
    for (const candidate of candidates) {
      const won = await this.prisma.deployment.updateMany({ where: { id: candidate.id, state: 'running', updatedAt: { lt: expired() } }, data: { updatedAt: new Date() } });
      if (won.count === 1) claimed.push(candidate);
    }
    return claimed;
  }

  /** Adds to a rollout's progress (and keeps it from looking stale). */
  async progress(deploymentId: string, change: { addTotal?: number; addDone?: number; event?: string }): Promise<void> {
    await this.prisma.$transaction(async (tx) => {
      const row = await tx.deployment.findUnique({ where: { id: deploymentId } });
      if (!row) return;
      const p = progressOf(row);
      p.stepsTotal += change.addTotal ?? 0;
      p.stepsDone += change.addDone ?? 0;
      if (change.event) p.events = [...p.events, `${new Date().toISOString()} ${change.event}`].slice(-EVENTS_MAX);
      await tx.deployment.update({ where: { id: deploymentId }, data: { progress: { ...p } } });
    });
  }

  /** The rollout reached its version: it becomes current, earlier active versions are superseded. */
  async succeed(serviceId: string, deploymentId: string, version: number, components: string[]): Promise<void> {
    await this.prisma.$transaction(async (tx) => {
      await tx.serviceVersion.updateMany({ where: { serviceId, status: 'active', version: { not: version } }, data: { status: 'superseded' } });
      await tx.serviceVersion.updateMany({ where: { serviceId, version }, data: { status: 'active' } });
      await tx.deployment.update({ where: { id: deploymentId }, data: { state: 'succeeded' } });
      await tx.service.update({ where: { id: serviceId }, data: { currentVersion: version, state: 'running' } });
      await this.recordComponents(tx, serviceId, version, components);
    });
  }

  /**
   * The rollout failed. `reverted`: the previous version's instances are
   * back, so it stays current and the failed version is marked reverted.
   */
  async fail(serviceId: string, deploymentId: string, version: number, outcome: { reverted: boolean; reason: string; currentVersion: number; currentComponents: string[] }): Promise<void> {
    await this.prisma.$transaction(async (tx) => {
      if (outcome.currentVersion > 0) await this.recordComponents(tx, serviceId, outcome.currentVersion, outcome.currentComponents);
      await tx.serviceVersion.updateMany({ where: { serviceId, version }, data: { status: outcome.reverted ? 'reverted' : 'failed' } });
      await tx.deployment.update({ where: { id: deploymentId }, data: { state: outcome.reverted ? 'reverted' : 'failed', reason: outcome.reason } });
      await tx.service.update({ where: { id: serviceId }, data: { state: outcome.reverted ? 'running' : 'degraded' } });
    });
  }

  setState(serviceId: string, state: 'stopped' | 'removed' | 'degraded'): Promise<ServiceRow> {
    return this.prisma.$transaction(async (tx) => {
      if (state === 'removed') await tx.serviceComponent.updateMany({ where: { serviceId }, data: { state: 'removed' } });
      return tx.service.update({ where: { id: serviceId }, data: { state } });
    });
  }

  /** An instance the new version keeps as it is: it now belongs to that version, with its policies. */
  async adopt(workloadId: string, version: number, policies: { restartPolicy: object; healthCheck?: object }): Promise<void> {
    await this.prisma.workload.update({
      where: { id: workloadId },
      data: {
        serviceVersion: version,
        restartPolicy: JSON.parse(JSON.stringify(policies.restartPolicy)),
        healthCheck: policies.healthCheck ? JSON.parse(JSON.stringify(policies.healthCheck)) : Prisma.DbNull,
      },
    });
  }

  /** Deletes one registry entry; and the service with it when it was the last and the service is not wanted. */
  async purgeComponent(serviceId: string, name: string): Promise<void> {
    await this.prisma.serviceComponent.deleteMany({ where: { serviceId, name } });
  }

  /** Deletes the service (versions, rollouts and registry go with it); its workload rows stay as history. */
  async deleteService(serviceId: string): Promise<void> {
    await this.prisma.service.deleteMany({ where: { id: serviceId } });
  }

  private async recordComponents(tx: Parameters<Parameters<PrismaClient['$transaction']>[0]>[0], serviceId: string, version: number, components: string[]): Promise<void> {
    for (const name of components) {
      await tx.serviceComponent.upsert({
        where: { serviceId_name: { serviceId, name } },
        create: { serviceId, name, state: 'active', lastVersion: version },
        update: { state: 'active', lastVersion: version },
      });
    }
    await tx.serviceComponent.updateMany({ where: { serviceId, name: { notIn: components } }, data: { state: 'removed' } });
  }
}
