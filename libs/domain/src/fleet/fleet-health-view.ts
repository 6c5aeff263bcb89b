import type { hostRegistryV1 } from '@corral/proto';

// Fleet health as clients see it: the JSON shape of GET /v1/fleet/health,
// which `corral hosts health --output json` prints too. One mapping, so the
// REST API and the CLI cannot drift apart.

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

const orNull = (value: string) => (value === '' ? null : value);
const isoOrNull = (value: Date | undefined) => (value ? value.toISOString() : null);

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
