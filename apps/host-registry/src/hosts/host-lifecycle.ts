import { FailedPreconditionError, InvalidArgumentError, NotFoundError, PermissionDeniedError, TERMINAL_STATES, type HostStatus, type InstanceState } from '@corral/domain';
import type { PrismaClient, Host as HostRow } from '@corral/db';

/** A workload as the host's last heartbeat reported it. */
export interface ReportedWorkload {
  workloadId: string;
  state: InstanceState;
}

export function reportedWorkloadsOf(host: Pick<HostRow, 'reportedWorkloads'>): ReportedWorkload[] {
  return Array.isArray(host.reportedWorkloads) ? (host.reportedWorkloads as unknown as ReportedWorkload[]) : [];
}

/** What an operator change did, for the status event. */
export interface StatusChange {
  host: HostRow;
  previous: HostStatus;
  changed: boolean;
}

const UUIDISH = /^[0-9A-Za-z-]{1,64}$/;

/**
 * The host an operator (or a team member, for a BYOC host) may manage.
 * Another team's host is not found (its existence is not theirs to know); a
 * platform host is visible to teams but only admins manage it.
 */
async function manageableHost(prisma: PrismaClient, id: string, teamId: string | undefined, includeDeleted = false): Promise<HostRow> {
  if (!UUIDISH.test(id)) throw new InvalidArgumentError('id must be a host id', { field: 'id' });
  const host = await prisma.host.findFirst({ where: { id, ...(includeDeleted ? {} : { deletedAt: null }) } });
  if (!host || (teamId && host.teamId !== null && host.teamId !== teamId)) throw new NotFoundError(`host ${id} not found`);
  if (teamId && host.teamId === null) throw new PermissionDeniedError('platform hosts are managed by platform admins');
  return host;
}

/**
 * Draining: the scheduler places nothing new there (its feasibility filter
 * only takes online hosts) and heartbeats keep it draining. Idempotent. A
 * host the monitor lost can be drained too, so it does not take placements
 * the moment it returns.
 */
export async function drainHost(prisma: PrismaClient, id: string, teamId?: string): Promise<StatusChange> {
  const host = await manageableHost(prisma, id, teamId);
  const previous = host.status as HostStatus;
  if (previous === 'draining') return { host, previous, changed: false };
  const res = await prisma.host.updateMany({ where: { id, deletedAt: null, status: { in: ['online', 'unreachable'] } }, data: { status: 'draining' } });
  const updated = await prisma.host.findUniqueOrThrow({ where: { id } });
  if (res.count === 0 && updated.status !== 'draining') throw new FailedPreconditionError(`host ${id} is ${updated.status} and cannot be drained`);
  return { host: updated, previous, changed: res.count === 1 };
}

/**
 * Back to online. The monitor marks it unreachable again if it has stopped
 * heartbeating meanwhile. Idempotent on an online host.
 */
export async function undrainHost(prisma: PrismaClient, id: string, teamId?: string): Promise<StatusChange> {
  const host = await manageableHost(prisma, id, teamId);
  const previous = host.status as HostStatus;
  if (previous === 'online') return { host, previous, changed: false };
  const res = await prisma.host.updateMany({ where: { id, deletedAt: null, status: 'draining' }, data: { status: 'online' } });
  const updated = await prisma.host.findUniqueOrThrow({ where: { id } });
  if (res.count === 0 && updated.status !== 'online') throw new FailedPreconditionError(`host ${id} is ${updated.status}, not draining`);
  return { host: updated, previous, changed: res.count === 1 };
}

export interface DeleteOutcome {
  host: HostRow;
  previous: HostStatus;
  /** Non-terminal workloads the host last reported. */
  affected: string[];
  /** False when it had been deleted before. */
  deletedNow: boolean;
}

/**
 * Removes a host for good. Refused (FailedPrecondition, naming them) while
 * its last heartbeat reported live workloads, unless `force`: the caller is
 * expected to have destroyed them. The row stays (soft delete) so workload
 * history keeps its host; heartbeats and credential refreshes of a deleted
 * host are refused (both check deleted_at), and its refresh tokens are
 * revoked. Idempotent.
 */
export async function deleteHost(prisma: PrismaClient, id: string, opts: { teamId?: string; force: boolean }, now: Date): Promise<DeleteOutcome> {
  const host = await manageableHost(prisma, id, opts.teamId, true);
  const affected = reportedWorkloadsOf(host)
    .filter((w) => !TERMINAL_STATES.has(w.state))
    .map((w) => w.workloadId);
  if (host.deletedAt) return { host, previous: host.status as HostStatus, affected, deletedNow: false };
  if (affected.length > 0 && !opts.force) {
    const shown = affected.slice(0, 20).join(', ');
    const more = affected.length > 20 ? ` and ${affected.length - 20} more` : '';
    throw new FailedPreconditionError(`host ${id} still runs ${affected.length} workload(s): ${shown}${more}; stop them or delete with force`);
  }
  const [res] = await prisma.$transaction([
    prisma.host.updateMany({ where: { id, deletedAt: null }, data: { deletedAt: now, status: 'down' } }),
    prisma.refreshToken.updateMany({ where: { hostId: id, revokedAt: null }, data: { revokedAt: now } }),
  ]);
  const updated = await prisma.host.findUniqueOrThrow({ where: { id } });
  return { host: updated, previous: host.status as HostStatus, affected, deletedNow: res.count === 1 };
}
