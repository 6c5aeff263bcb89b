import type { PrismaClient } from '@corral/db';
import type { Logger } from '@corral/logging';

/**
 * Marks online hosts whose heartbeats stopped as unreachable. Liveness uses
 * the time heartbeats were received here, never the agent's clock.
 * (Leader election, brakes for a sick control plane and marking the host's
 * workloads missing belong to the "Host identity and fleet membership" work.)
 */
export async function markSilentHostsUnreachable(prisma: PrismaClient, silentForMs: number, now: Date): Promise<string[]> {
  const cutoff = new Date(now.getTime() - silentForMs);
  const silent = await prisma.host.findMany({
    where: { status: 'online', deletedAt: null, lastHeartbeatAt: { lt: cutoff } },
    select: { id: true },
  });
  if (silent.length === 0) return [];
  // Re-check the cutoff in the update: a heartbeat may have landed since the read.
  await prisma.host.updateMany({
    where: { id: { in: silent.map((h) => h.id) }, status: 'online', lastHeartbeatAt: { lt: cutoff } },
    data: { status: 'unreachable' },
  });
  return silent.map((h) => h.id);
}

export function startLivenessMonitor(prisma: PrismaClient, logger: Logger, opts: { intervalMs: number; silentForMs: number }) {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = markSilentHostsUnreachable(prisma, opts.silentForMs, new Date())
      .then((ids) => {
        if (ids.length) logger.warn('hosts stopped heartbeating: marked unreachable', { hostIds: ids });
      })
      .catch((err) => logger.error('liveness check failed', { err }))
      .finally(() => (running = undefined));
  }, opts.intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
