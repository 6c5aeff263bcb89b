import type { schedulerV1 } from '@corral/proto';
import type { PurgeOutcome } from '../operations/service-operations';
import { workloadView } from './views';

// Services as REST JSON, field by field.

const iso = (value: Date | undefined) => (value ? value.toISOString() : null);
const parsed = (json: string): unknown => (json === '' ? null : JSON.parse(json));

export function planView(p: schedulerV1.ServicePlan) {
  const change = (c: schedulerV1.ServiceFieldChange) => ({ field: c.field, kind: c.kind, from: parsed(c.fromJson), to: parsed(c.toJson), impact: c.impact });
  return {
    service: p.service,
    action: p.action,
    fromVersion: p.fromVersion,
    fromDigest: p.fromDigest || null,
    toDigest: p.toDigest,
    serviceChanges: p.serviceChanges.map(change),
    components: p.components.map((c) => ({
      name: c.name,
      action: c.action,
      countFrom: c.countFrom,
      countTo: c.countTo,
      replacesInstances: c.replacesInstances,
      reschedules: c.reschedules,
      changes: c.changes.map(change),
    })),
    summary: p.summary,
  };
}

export function deploymentView(d: schedulerV1.ServiceDeployment) {
  return {
    id: d.id,
    fromVersion: d.fromVersion,
    toVersion: d.toVersion,
    state: d.state,
    reason: d.reason || null,
    stepsTotal: d.stepsTotal,
    stepsDone: d.stepsDone,
    events: d.events,
    createdAt: iso(d.createdAt),
    updatedAt: iso(d.updatedAt),
  };
}

export function serviceView(s: schedulerV1.Service) {
  return {
    id: s.id,
    name: s.name,
    teamId: s.teamId || null,
    currentVersion: s.currentVersion,
    state: s.state,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
    versions: s.versions.map((v) => ({ version: v.version, status: v.status, digest: v.digest, source: v.sourceToml, createdAt: iso(v.createdAt) })),
    instances: s.instances.map((i) => ({ component: i.component, index: i.index, version: i.version, ...(i.workload ? { workload: workloadView(i.workload) } : {}) })),
    latestDeployment: s.latestDeployment ? deploymentView(s.latestDeployment) : null,
    components: s.components.map((c) => ({ name: c.name, state: c.state, lastVersion: c.lastVersion })),
  };
}

export function purgeView(p: PurgeOutcome) {
  return { dryRun: p.dryRun, purged: p.purged.map((c) => ({ name: c.name, reason: c.reason })), refused: p.refused.map((c) => ({ name: c.name, reason: c.reason })), serviceDeleted: p.serviceDeleted };
}
