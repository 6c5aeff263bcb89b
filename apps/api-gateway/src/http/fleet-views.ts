import type { hostRegistryV1 } from '@corral/proto';
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

export interface FleetHealthView {
  leader: boolean;
  epoch: number;
  brake: { active: boolean; reasons: string[]; detail: string | null; since: string | null };
  lastCheckAt: string | null;
  busConnected: boolean;
  databaseHealthy: boolean;
  heartbeats: { received: number; applied: number; dropped: number; latencyP50Ms: number; latencyP99Ms: number; flushP99Ms: number };
  hostsByStatus: Record<string, number>;
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

/** FLEET_ALARM_REASON_MASS_SILENCE → mass_silence. */
export const alarmReasonName = (reason: string) => reason.replace(/^FLEET_ALARM_REASON_/, '').toLowerCase();

export function fleetHealthView(h: hostRegistryV1.GetFleetHealthResponse): FleetHealthView {
  return {
    leader: h.leader,
    epoch: h.epoch,
    brake: { active: h.brakeActive, reasons: h.brakeReasons.map(alarmReasonName), detail: orNull(h.brakeDetail), since: isoOrNull(h.brakeSince) },
    lastCheckAt: isoOrNull(h.lastCheckAt),
    busConnected: h.busConnected,
    databaseHealthy: h.databaseHealthy,
    heartbeats: {
      received: h.heartbeatsReceived,
      applied: h.heartbeatsApplied,
      dropped: h.heartbeatsDropped,
      latencyP50Ms: h.heartbeatLatencyP50Ms,
      latencyP99Ms: h.heartbeatLatencyP99Ms,
      flushP99Ms: h.flushP99Ms,
    },
    hostsByStatus: { ...h.hostsByStatus },
  };
}

export function hostDeletionView(r: DeleteHostResult): HostDeletionView {
  return {
    id: r.id,
    deletedNow: r.deletedNow,
    affectedWorkloads: [...r.affectedWorkloadIds],
    stoppedWorkloads: [...r.stoppedWorkloadIds],
    unreachableWorkloads: [...r.unreachableWorkloadIds],
  };
}
