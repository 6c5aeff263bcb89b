import type { PrismaClient } from '@corral/db';
import type { HostHeartbeat } from '@corral/proto';
import type { Logger } from '@corral/logging';

export type HeartbeatOutcome = 'applied' | 'stale' | 'unknown-host';

/**
 * Applies one heartbeat. Delivery may duplicate, delay and reorder messages
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

export function heartbeatHandler(prisma: PrismaClient, logger: Logger, now: () => Date = () => new Date()) {
  return async (hb: HostHeartbeat) => {
    const outcome = await applyHeartbeat(prisma, hb, now());
    if (outcome === 'unknown-host') logger.warn('heartbeat from an unknown or deleted host', { hostId: hb.hostId });
    else logger.debug('heartbeat', { hostId: hb.hostId, seq: hb.seq, outcome });
  };
}
