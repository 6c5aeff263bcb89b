import type { PrismaClient } from '@corral/db';

/** Whether a host exists and is not deleted: only such a host's agent is told its heartbeats are refused. */
export function knownHostIn(prisma: Pick<PrismaClient, 'host'>): (hostId: string) => Promise<boolean> {
  return async (hostId) => (await prisma.host.count({ where: { id: hostId, deletedAt: null } })) > 0;
}
