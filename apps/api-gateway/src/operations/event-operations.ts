import { InvalidArgumentError, UnavailableError } from '@corral/domain';
import type { AuditEvent, PrismaClient } from '@corral/db';
import { teamScopeOf } from './caller';
import type { OperationContext } from './corral-operations';

// The audit trail in the public API (REST and gRPC alike): drift the
// reconciler saw and actions it (or another component) took, with reasons.
// Read straight from audit_events (the gateway already holds a database
// client, for API keys): an admin sees every entry, a team only entries
// about its own workloads and hosts (the row carries the subject's team).

export interface EventFilter {
  /** Only entries with a larger id (the last one seen, to continue). */
  afterId?: bigint;
  since?: Date;
  subjectId?: string;
  kind?: string;
  limit?: number;
}

export interface EventView {
  id: string;
  at: string;
  actor: string;
  kind: string;
  action: string;
  outcome: string;
  subjectType: string;
  subjectId: string;
  teamId: string | null;
  reason: string;
  data: Record<string, unknown>;
}

export const EVENT_KINDS = ['drift', 'action', 'lifecycle', 'deploy'] as const;
export const DEFAULT_EVENT_LIMIT = 100;
export const MAX_EVENT_LIMIT = 1000;
/** How often a follower looks for new entries when no doorbell rings (NATS is at most once, or absent). */
export const FOLLOW_POLL_MS = 2_000;

export interface EventOperations {
  /** Oldest first, after `afterId` / from `since`, at most `limit`. */
  listEvents(ctx: OperationContext, filter: EventFilter): Promise<EventView[]>;
  /**
   * The backlog (as listEvents), then every new entry as it is stored,
   * until `ctx.signal` aborts. Continues by id from the last one sent, so
   * nothing is sent twice and nothing between backlog and live is skipped.
   */
  followEvents(ctx: OperationContext, filter: EventFilter): AsyncIterable<EventView>;
}

export function eventView(row: AuditEvent): EventView {
  return {
    id: row.id.toString(),
    at: row.at.toISOString(),
    actor: row.actor,
    kind: row.kind,
    action: row.action,
    outcome: row.outcome,
    subjectType: row.subjectType,
    subjectId: row.subjectId,
    teamId: row.teamId,
    reason: row.reason,
    data: (row.data ?? {}) as Record<string, unknown>,
  };
}

function checkFilter(filter: EventFilter): void {
  if (filter.kind !== undefined && !(EVENT_KINDS as readonly string[]).includes(filter.kind)) {
    throw new InvalidArgumentError(`kind must be one of ${EVENT_KINDS.join(', ')}`, { field: 'kind' });
  }
  if (filter.limit !== undefined && (!Number.isInteger(filter.limit) || filter.limit < 1 || filter.limit > MAX_EVENT_LIMIT)) {
    throw new InvalidArgumentError(`limit must be between 1 and ${MAX_EVENT_LIMIT}`, { field: 'limit' });
  }
  if (filter.since !== undefined && Number.isNaN(filter.since.getTime())) throw new InvalidArgumentError('since must be a date-time', { field: 'since' });
}

/** Subscribes to "something was recorded" (the audit topic on NATS); returns the unsubscribe. */
export type AuditDoorbell = (ring: () => void) => () => void;

/**
 * How long an id is remembered after it was sent: a row whose id was taken
 * before, but whose transaction committed after, a higher one already sent
 * (concurrent writers) is still picked up if it commits within this window.
 */
export const LATE_COMMIT_WINDOW_MS = 30_000;

/** A pause that ends early when the doorbell rings or the caller leaves. */
function waitForNews(ms: number, signal: AbortSignal | undefined, doorbell: { rung: boolean; wake?: () => void }): Promise<void> {
  if (doorbell.rung) {
    doorbell.rung = false;
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      doorbell.wake = undefined;
      doorbell.rung = false;
      resolve();
    }
    doorbell.wake = done;
    signal?.addEventListener('abort', done, { once: true });
  });
}

export function createEventOperations(prisma: PrismaClient | undefined, options: { pollMs?: number; doorbell?: AuditDoorbell; now?: () => number } = {}): EventOperations {
  const pollMs = options.pollMs ?? FOLLOW_POLL_MS;
  const now = options.now ?? Date.now;
  const scopeOf = (ctx: OperationContext, filter: EventFilter) => {
    const team = teamScopeOf(ctx.caller);
    return {
      ...(team ? { teamId: team } : {}),
      ...(filter.since ? { at: { gte: filter.since } } : {}),
      ...(filter.subjectId ? { subjectId: filter.subjectId } : {}),
      ...(filter.kind ? { kind: filter.kind } : {}),
    };
  };
  const db = () => {
    if (!prisma) throw new UnavailableError('the audit trail is not available');
    return prisma;
  };
  return {
    async listEvents(ctx, filter) {
      checkFilter(filter);
      const rows = await db().auditEvent.findMany({
        where: { ...scopeOf(ctx, filter), ...(filter.afterId !== undefined ? { id: { gt: filter.afterId } } : {}) },
        orderBy: { id: 'asc' },
        take: filter.limit ?? DEFAULT_EVENT_LIMIT,
      });
      return rows.map(eventView);
    },
    followEvents(ctx, filter) {
      checkFilter(filter);
      // Refusals before the stream starts, so they are ordinary statuses.
      const client = db();
      const scope = scopeOf(ctx, filter);
      return (async function* () {
        // The doorbell is subscribed before the backlog is read, so nothing
        // recorded meanwhile waits for the next poll. The table is the
        // record: a rung bell (or the poll, for messages NATS lost) only
        // means "read again".
        const doorbell: { rung: boolean; wake?: () => void } = { rung: false };
        const unsubscribe = options.doorbell?.((() => {
          doorbell.rung = true;
          doorbell.wake?.();
        }) as () => void);
        let lastId = filter.afterId;
        /** Ids sent above the floor: not to be sent again. */
        const recent = new Set<bigint>();
        /** The last id sent, as of each read: the floor is the newest mark older than the late-commit window. */
        const marks: Array<{ at: number; lastId: bigint }> = [];
        const start = filter.afterId ?? 0n;
        let first = true;
        try {
          while (!ctx.signal?.aborted) {
            while (marks.length > 1 && now() - marks[1].at > LATE_COMMIT_WINDOW_MS) marks.shift();
            const floor = marks.length > 0 && now() - marks[0].at > LATE_COMMIT_WINDOW_MS ? marks[0].lastId : start;
            for (const id of recent) if (id <= floor) recent.delete(id);
            const newer = lastId !== undefined ? { id: { gt: lastId } } : {};
            // Also ids between the floor and the last sent one that were not sent: late commits.
            const late = lastId !== undefined && floor < lastId ? [{ id: { gt: floor, lt: lastId, notIn: [...recent] } }] : [];
            const rows = await client.auditEvent.findMany({
              where: late.length > 0 ? { ...scope, OR: [newer, ...late] } : { ...scope, ...newer },
              orderBy: { id: 'asc' },
              take: first ? (filter.limit ?? MAX_EVENT_LIMIT) : MAX_EVENT_LIMIT,
            });
            first = false;
            for (const row of rows) {
              if (recent.has(row.id)) continue;
              if (lastId === undefined || row.id > lastId) lastId = row.id;
              recent.add(row.id);
              yield eventView(row);
            }
            if (lastId !== undefined) marks.push({ at: now(), lastId });
            // A full page means more is waiting: read on at once.
            if (rows.length < MAX_EVENT_LIMIT) await waitForNews(pollMs, ctx.signal, doorbell);
          }
        } finally {
          unsubscribe?.();
        }
      })();
    },
  };
}
