import type { PrismaClient } from '@corral/db';
import type { hostRegistryV1 } from '@corral/proto';
import type { BrakeReason, ControlPlaneHealth } from './control-plane-health';
import type { LatencyWindow } from './latency-window';
import { brakeReasonToProto, type LivenessMonitor } from './liveness-monitor';

export interface FleetHealthSources {
  prisma: PrismaClient;
  health: ControlPlaneHealth;
  /** The heartbeat intake's counters (HeartbeatBatcher, or the bench-only direct writer). */
  intake: { received: number; applied: number; dropped: number; latency: LatencyWindow; flushDurations: LatencyWindow };
  monitor: Pick<LivenessMonitor, 'isLeader'>;
}

/**
 * GetFleetHealth: the leader's brake as recorded in fleet_monitor (so any
 * replica answers the same), plus this replica's own connections and intake.
 */
export async function fleetHealth(src: FleetHealthSources): Promise<hostRegistryV1.GetFleetHealthResponse> {
  const [row, counts] = await Promise.all([
    src.prisma.fleetMonitor.findUnique({ where: { id: 1 } }),
    src.prisma.host.groupBy({ by: ['status'], where: { deletedAt: null }, _count: { _all: true } }),
  ]);
  const reasons = Array.isArray(row?.brakeReasons) ? (row.brakeReasons as BrakeReason[]) : [];
  return {
    leader: src.monitor.isLeader,
    epoch: Number(row?.epoch ?? 0),
    brakeActive: row?.brakeActive ?? false,
    brakeReasons: reasons.map(brakeReasonToProto),
    brakeDetail: row?.brakeDetail ?? '',
    brakeSince: row?.brakeSince ?? undefined,
    lastCheckAt: row?.lastCheckAt ?? undefined,
    busConnected: src.health.busConnected,
    databaseHealthy: src.health.databaseHealthy,
    heartbeatsReceived: src.intake.received,
    heartbeatsApplied: src.intake.applied,
    heartbeatsDropped: src.intake.dropped,
    heartbeatLatencyP50Ms: src.intake.latency.percentile(50),
    heartbeatLatencyP99Ms: src.intake.latency.percentile(99),
    flushP99Ms: src.intake.flushDurations.percentile(99),
    hostsByStatus: Object.fromEntries(counts.map((c) => [c.status, c._count._all])),
  };
}
