import type { hostRegistryV1, schedulerV1 } from '@corral/proto';
import type { DeleteHostResult } from '../operations/fleet-operations';

// JSON forms of fleet membership over REST, built field by field like
// views.ts: a registration token never carries its secret or hash (the
// registry does not send them either), and nothing the registry adds later
// reaches a client unless listed here.

export const TOKEN_STATES = ['active', 'used', 'expired', 'revoked'] as const;
export type TokenState = (typeof TOKEN_STATES)[number];

export interface RegistrationTokenView {
  id: string;
  description: string;
  teamId: string | null;
  state: TokenState;
  createdAt: string | null;
  expiresAt: string | null;
  usedAt: string | null;
  usedByHostId: string | null;
  revokedAt: string | null;
  scope: { namePattern: string | null; labels: Record<string, string> };
}

export interface HostDeletionView {
  id: string;
  deletedNow: boolean;
  affectedWorkloads: string[];
  stoppedWorkloads: string[];
  unreachableWorkloads: string[];
}

const orNull = (value: string) => (value === '' ? null : value);
const isoOrNull = (value: Date | undefined) => (value ? value.toISOString() : null);

/** Revoked beats used beats expired: the first thing that ended it. */
export function tokenState(t: hostRegistryV1.RegistrationToken, now: Date): TokenState {
  if (t.revokedAt) return 'revoked';
  if (t.usedAt) return 'used';
  if (t.expiresAt && t.expiresAt.getTime() <= now.getTime()) return 'expired';
  return 'active';
}

export function registrationTokenView(t: hostRegistryV1.RegistrationToken, now = new Date()): RegistrationTokenView {
  return {
    id: t.id,
    description: t.description,
    teamId: orNull(t.teamId),
    state: tokenState(t, now),
    createdAt: isoOrNull(t.createdAt),
    expiresAt: isoOrNull(t.expiresAt),
    usedAt: isoOrNull(t.usedAt),
    usedByHostId: orNull(t.usedByHostId),
    revokedAt: isoOrNull(t.revokedAt),
    scope: { namePattern: orNull(t.scope?.namePattern ?? ''), labels: { ...(t.scope?.labels ?? {}) } },
  };
}

// Fleet health's view is shared with the CLI's --output json (libs/domain).
export { alarmReasonName, fleetHealthView, type FleetHealthView } from '@corral/domain';

export function hostDeletionView(r: DeleteHostResult): HostDeletionView {
  return {
    id: r.id,
    deletedNow: r.deletedNow,
    affectedWorkloads: [...r.affectedWorkloadIds],
    stoppedWorkloads: [...r.stoppedWorkloadIds],
    unreachableWorkloads: [...r.unreachableWorkloadIds],
  };
}

export interface WorkloadMigrationView {
  workloadId: string;
  name: string;
  outcome: string;
  replacementId: string | null;
  toHostId: string | null;
  reason: string;
}

/** One workload's outcome of a drain with migrate. */
export function workloadMigrationView(m: schedulerV1.WorkloadMigration): WorkloadMigrationView {
  return {
    workloadId: m.workloadId,
    name: m.name,
    outcome: m.outcome,
    replacementId: m.replacementId || null,
    toHostId: m.toHostId || null,
    reason: m.reason,
  };
}
