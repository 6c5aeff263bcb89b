import { performance } from 'node:perf_hooks';
import type { PrismaClient } from '@corral/db';
import type { HostHeartbeat } from '@corral/proto';
import { LatencyWindow } from './latency-window';

export type HeartbeatOutcome = 'applied' | 'stale' | 'unknown-host';

/**
 * Applies one heartbeat with one statement. The service uses HeartbeatBatcher
 * (the same guard, batched); this single-row form is the reference it is
 * checked against in tests. Delivery may duplicate, delay and reorder messages
 * and several replicas may consume concurrently, so ordering is enforced by
 * the guarded UPDATE itself: within one agent boot a heartbeat applies only
 * when its seq is higher than the stored one; a different boot applies only
 * when it was sent later than the last applied heartbeat.
 */
export async function applyHeartbeat(prisma: PrismaClient, hb: HostHeartbeat, receivedAt: Date): Promise<HeartbeatOutcome> {
  const sentAt = hb.sentAt ?? receivedAt;
  const seq = BigInt(hb.seq);
  const result = await prisma.host.updateMany({
    where: {
      id: hb.hostId,
      deletedAt: null,
      OR: [
        { bootId: hb.bootId, lastSeq: { lt: seq } },
        { bootId: null },
        { bootId: { not: hb.bootId }, OR: [{ lastHeartbeatSentAt: null }, { lastHeartbeatSentAt: { lt: sentAt } }] },
      ],
    },
    data: {
      bootId: hb.bootId,
      lastSeq: seq,
      lastHeartbeatAt: receivedAt,
      lastHeartbeatSentAt: sentAt,
      ...(hb.capacity ? { capacity: { ...hb.capacity } } : {}),
      ...(hb.usage ? { usage: { ...hb.usage } } : {}),
      ...(hb.drivers.length ? { drivers: hb.drivers.map((d) => ({ ...d })) } : {}),
      ...(hb.agentAddress ? { agentAddress: hb.agentAddress } : {}),
    },
  });
  if (result.count === 0) {
    const exists = await prisma.host.count({ where: { id: hb.hostId, deletedAt: null } });
    return exists ? 'stale' : 'unknown-host';
  }
  // Only a host the monitor had given up on comes back by heartbeating;
  // draining and down are operator decisions a heartbeat must not undo.
  await prisma.host.updateMany({ where: { id: hb.hostId, status: 'unreachable' }, data: { status: 'online' } });
  return 'applied';
}

/**
 * One UPDATE per heartbeat, in arrival order: the design HeartbeatBatcher
 * replaced, kept only so bench/membership can measure both on the same
 * machine (HEARTBEAT_WRITE_MODE=direct). It neither reports returning hosts
 * nor feeds the brake; never use it in production.
 */
export class DirectHeartbeatWriter {
  readonly latency = new LatencyWindow(100_000);
  readonly flushDurations = new LatencyWindow(1000);
  received = 0;
  applied = 0;
  dropped = 0;

  constructor(private readonly prisma: PrismaClient) {}

  async offer(hb: HostHeartbeat, receivedAt: Date = new Date()): Promise<void> {
    this.received += 1;
    const started = performance.now();
    const outcome = await applyHeartbeat(this.prisma, hb, receivedAt).catch(() => 'stale' as const);
    const took = performance.now() - started;
    this.flushDurations.add(took);
    // Receipt is when the (sequential) subscription loop got to it, so a
    // backlog does not show here; it shows as applied falling behind sent.
    this.latency.add(took);
    if (outcome === 'applied') this.applied += 1;
    else this.dropped += 1;
  }
}
