import type { FieldChange, ServicePlan } from '@corral/domain';
import type { Deployment as DeploymentRow, Service as ServiceRow, ServiceComponent as ServiceComponentRow, ServiceVersion as ServiceVersionRow, Workload as WorkloadRow } from '@corral/db';
import type { schedulerV1 } from '@corral/proto';
import { workloadToProto } from '../workloads/workload-store';
import { progressOf } from './service-store';

// Service records → protobuf.

const json = (value: unknown) => (value === undefined ? '' : JSON.stringify(value));

function changeToProto(ch: FieldChange): schedulerV1.ServiceFieldChange {
  return { field: ch.field, kind: ch.kind, fromJson: json(ch.from), toJson: json(ch.to), impact: ch.impact };
}

export function planToProto(plan: ServicePlan, fromVersion: number): schedulerV1.ServicePlan {
  return {
    service: plan.service,
    action: plan.action,
    fromDigest: plan.fromDigest ?? '',
    toDigest: plan.toDigest,
    serviceChanges: plan.serviceChanges.map(changeToProto),
    components: plan.components.map((c) => ({
      name: c.name,
      action: c.action,
      countFrom: c.countFrom,
      countTo: c.countTo,
      changes: c.changes.map(changeToProto),
      replacesInstances: c.replacesInstances,
      reschedules: c.reschedules,
    })),
    summary: plan.summary,
    fromVersion,
  };
}

export function deploymentToProto(row: DeploymentRow): schedulerV1.ServiceDeployment {
  const p = progressOf(row);
  return {
    id: row.id,
    fromVersion: row.fromVersion,
    toVersion: row.toVersion,
    state: row.state,
    reason: row.reason ?? '',
    stepsTotal: p.stepsTotal,
    stepsDone: p.stepsDone,
    events: p.events,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

export interface ServiceDetail {
  versions?: ServiceVersionRow[];
  instances?: WorkloadRow[];
  latestDeployment?: DeploymentRow | null;
  components?: ServiceComponentRow[];
}

export function serviceToProto(row: ServiceRow, detail: ServiceDetail = {}): schedulerV1.Service {
  return {
    id: row.id,
    name: row.name,
    teamId: row.teamId ?? '',
    currentVersion: row.currentVersion,
    state: row.state,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    versions: (detail.versions ?? []).map((v) => ({ version: v.version, status: v.status, digest: v.digest, sourceToml: v.source, createdAt: v.createdAt })),
    instances: (detail.instances ?? []).map((w) => ({ component: w.componentName ?? '', index: w.instanceIndex ?? 0, version: w.serviceVersion ?? 0, workload: workloadToProto(w) })),
    latestDeployment: detail.latestDeployment ? deploymentToProto(detail.latestDeployment) : undefined,
    components: (detail.components ?? []).map((c) => ({ name: c.name, state: c.state, lastVersion: c.lastVersion })),
  };
}
