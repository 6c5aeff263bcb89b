import {
  NotFoundError,
  TERMINAL_STATES,
  instanceStateToProto,
  validateWorkloadSpec,
  workloadExtrasToWire,
  type InstanceState,
  type WorkloadResources,
  type WorkloadRoute,
  type WorkloadSpec,
  type WorkloadSpecInput,
  type WorkloadVm,
} from '@corral/domain';
import type { Prisma, PrismaClient, Workload as WorkloadRow } from '@corral/db';
import type { schedulerV1 } from '@corral/proto';

export interface NewWorkload {
  id: string;
  name: string;
  teamId: string | null;
  driver: string;
  command: string[];
  env: Record<string, string>;
  image?: string;
  resources?: WorkloadResources;
  routes: WorkloadRoute[];
  vm?: WorkloadVm;
  hostId: string;
  placementReason: string;
  /** Set for an instance of a deployed service component. */
  service?: ServiceMembership;
}

/** Which service component instance a workload is, with the policies the deploy gave it. */
export interface ServiceMembership {
  serviceId: string;
  componentName: string;
  serviceVersion: number;
  instanceIndex: number;
  restartPolicy: { policy: string; maxAttempts: number; delaySeconds: number };
  healthCheck?: Record<string, unknown>;
}

/** A route's host port on the workload's host, as its agent reported it. */
export interface PortMapping {
  name: string;
  guestPort: number;
  hostPort: number;
  protocol: string;
}

export interface AgentReport {
  seq: number;
  state: InstanceState;
  exited: boolean;
  exitCode: number;
  reason: string;
  /**
   * The host ports the agent holds for the workload at this seq, stored
   * with the state under the same seq guard. Undefined when the report does
   * not say (a state event from an agent that predates ports on events):
   * the stored ports are then left alone.
   */
  ports?: PortMapping[];
}

export interface WorkloadListFilter {
  hostId?: string;
  excludeTerminal?: boolean;
}

/** Durable workload records. Every change also lands in workload_events. */
export class WorkloadStore {
  constructor(readonly prisma: PrismaClient) {}

  /** `tx`: write inside the caller's transaction (placement writes the row while it holds the host's lock). */
  async create(w: NewWorkload, tx?: Prisma.TransactionClient): Promise<WorkloadRow> {
    if (tx) return this.createIn(tx, w);
    return this.prisma.$transaction((inner) => this.createIn(inner, w));
  }

  private async createIn(tx: Prisma.TransactionClient, w: NewWorkload): Promise<WorkloadRow> {
    const row = await tx.workload.create({
      data: {
        id: w.id,
        name: w.name,
        teamId: w.teamId,
        driver: w.driver,
        command: w.command,
        env: w.env,
        image: w.image ?? null,
        resources: { ...(w.resources ?? {}) },
        routes: w.routes.map((r) => ({ ...r })),
        ...(w.vm ? { vm: { ...w.vm } } : {}),
        hostId: w.hostId,
        state: 'pending',
        ...(w.service
          ? {
              serviceId: w.service.serviceId,
              componentName: w.service.componentName,
              serviceVersion: w.service.serviceVersion,
              instanceIndex: w.service.instanceIndex,
              restartPolicy: { ...w.service.restartPolicy },
              // Plain JSON: the component's health check as the definition has it.
              ...(w.service.healthCheck ? { healthCheck: { ...w.service.healthCheck } as Prisma.InputJsonObject } : {}),
            }
          : {}),
      },
    });
    await tx.workloadEvent.create({
      data: { workloadId: w.id, type: 'scheduled', state: 'pending', message: w.placementReason, data: { hostId: w.hostId } },
    });
    return row;
  }

  /** A workload of another team is reported as not found. */
  async get(id: string, teamId: string | null): Promise<WorkloadRow> {
    const row = await this.prisma.workload.findFirst({ where: { id, ...(teamId ? { teamId } : {}) } });
    if (!row) throw new NotFoundError(`workload ${id} not found`);
    return row;
  }

  /** Newest first. `hostId` narrows to one host's workloads, `excludeTerminal` to those not at rest. */
  async list(teamId: string | null, filter: WorkloadListFilter = {}): Promise<WorkloadRow[]> {
    return this.prisma.workload.findMany({
      where: {
        ...(teamId ? { teamId } : {}),
        ...(filter.hostId ? { hostId: filter.hostId } : {}),
        ...(filter.excludeTerminal ? { state: { notIn: [...TERMINAL_STATES] } } : {}),
      },
      orderBy: { createdAt: 'desc' },
      take: 1000,
    });
  }

  /**
   * A control-plane decision (provisioning, stopping, failed...). It does not
   * advance stateSeq, so the agent's next report still applies; `from` guards
   * against overwriting a state that moved on meanwhile.
   */
  async transition(id: string, from: InstanceState[], to: InstanceState, message: string, extra: { reason?: string } = {}): Promise<boolean> {
    return this.prisma.$transaction(async (tx) => {
      const res = await tx.workload.updateMany({
        where: { id, state: { in: from } },
        data: {
          state: to,
          ...(extra.reason ? { reason: extra.reason } : {}),
          // Nothing runs any more, so nothing holds a port.
          ...(TERMINAL_STATES.has(to) ? { ports: [] } : {}),
        },
      });
      if (res.count === 1) await tx.workloadEvent.create({ data: { workloadId: id, type: 'transition', state: to, message } });
      return res.count === 1;
    });
  }

  /**
   * Applies a state reported by the agent. Reports can arrive twice, late or
   * out of order (the RPC answer and the NATS event race each other), so the
   * update only matches while the stored sequence is lower than the report's.
   */
  async applyAgentReport(id: string, report: AgentReport, source: string): Promise<boolean> {
    return this.prisma.$transaction(async (tx) => {
      // An agent releases a workload's ports once it stopped for good.
      const ports = TERMINAL_STATES.has(report.state) ? [] : report.ports?.map((p) => ({ ...p }));
      const res = await tx.workload.updateMany({
        where: { id, stateSeq: { lt: BigInt(report.seq) } },
        data: {
          state: report.state,
          stateSeq: BigInt(report.seq),
          ...(report.exited ? { exitCode: report.exitCode } : {}),
          ...(report.reason ? { reason: report.reason } : {}),
          ...(ports ? { ports } : {}),
        },
      });
      if (res.count === 0 && ports) {
        // The state event of the same seq won the race: its state is already
        // here, but only this report knows the ports of that moment.
        await tx.workload.updateMany({ where: { id, stateSeq: BigInt(report.seq), state: { notIn: [...TERMINAL_STATES] } }, data: { ports } });
      }
      if (res.count === 1) {
        await tx.workloadEvent.create({
          data: {
            workloadId: id,
            type: 'agent-report',
            state: report.state,
            seq: BigInt(report.seq),
            message: report.exited ? `exited with code ${report.exitCode}` : `reported ${report.state}`,
            data: { source, ...(report.reason ? { reason: report.reason } : {}) },
          },
        });
      }
      return res.count === 1;
    });
  }
}

/** The ports stored for a workload. */
export function portsOf(row: WorkloadRow): PortMapping[] {
  return Array.isArray(row.ports) ? (row.ports as unknown as PortMapping[]) : [];
}

/** The routes stored for a workload. */
export function routesOf(row: WorkloadRow): WorkloadRoute[] {
  return Array.isArray(row.routes) ? (row.routes as unknown as WorkloadRoute[]) : [];
}

/** The stored spec of a workload, validated again like a create. */
export function specOfRow(row: WorkloadRow): WorkloadSpec {
  return validateWorkloadSpec({
    name: row.name,
    driver: row.driver,
    command: (row.command ?? []) as string[],
    env: (row.env ?? {}) as Record<string, string>,
    image: row.image ?? undefined,
    resources: Object.keys((row.resources ?? {}) as object).length > 0 ? (row.resources as WorkloadSpecInput['resources']) : undefined,
    routes: routesOf(row),
    vm: (row.vm ?? undefined) as WorkloadSpecInput['vm'],
  });
}

/** The service component slot a workload fills, to be copied onto its replacement. */
export function membershipOfRow(row: WorkloadRow): ServiceMembership | undefined {
  if (!row.serviceId || !row.componentName) return undefined;
  const policy = (row.restartPolicy ?? {}) as Partial<ServiceMembership['restartPolicy']>;
  return {
    serviceId: row.serviceId,
    componentName: row.componentName,
    serviceVersion: row.serviceVersion ?? 0,
    instanceIndex: row.instanceIndex ?? 0,
    restartPolicy: { policy: policy.policy ?? 'never', maxAttempts: policy.maxAttempts ?? 0, delaySeconds: policy.delaySeconds ?? 0 },
    ...(row.healthCheck ? { healthCheck: row.healthCheck as Record<string, unknown> } : {}),
  };
}

export function workloadToProto(row: WorkloadRow): schedulerV1.Workload {
  const env = (row.env ?? {}) as Record<string, string>;
  const extras = workloadExtrasToWire({
    image: row.image ?? undefined,
    resources: (row.resources ?? undefined) as WorkloadResources | undefined,
    routes: routesOf(row),
    vm: (row.vm ?? undefined) as WorkloadVm | undefined,
  });
  return {
    id: row.id,
    name: row.name,
    teamId: row.teamId ?? '',
    driver: row.driver,
    command: (row.command ?? []) as string[],
    envKeys: Object.keys(env).sort(),
    state: instanceStateToProto(row.state as InstanceState),
    hostId: row.hostId ?? '',
    exited: row.exitCode !== null,
    exitCode: row.exitCode ?? 0,
    reason: row.reason ?? '',
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    image: extras.image,
    // Stored as {} when none were asked for.
    resources: Object.keys((row.resources ?? {}) as object).length > 0 ? extras.resources : undefined,
    routes: extras.routes,
    ports: portsOf(row).map((p) => ({ name: p.name, guestPort: p.guestPort, hostPort: p.hostPort, protocol: p.protocol })),
    vm: extras.vm,
  };
}
