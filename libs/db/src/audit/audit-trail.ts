import type { PrismaClient } from '../generated/prisma/client';

// The audit trail's one writer (audit_events). Any component may record an
// entry; the reconciler fences its entries with its epoch, so a deposed
// leader's late findings never enter the trail.

export type AuditKind = 'drift' | 'action' | 'lifecycle' | 'deploy';
export type AuditOutcome = 'observed' | 'succeeded' | 'failed' | 'skipped';

export interface AuditEntry {
  /** Who acted, e.g. `reconciler/<replica>`, `scheduler`. */
  actor: string;
  kind: AuditKind;
  /** What was seen or done, e.g. `mark-missing`, `restart`, `reap-orphan`. */
  action: string;
  outcome: AuditOutcome;
  subjectType: 'workload' | 'host';
  subjectId: string;
  /** The subject's team (null: a platform subject), so teams see only their own. */
  teamId: string | null;
  /** For people; never secrets. */
  reason: string;
  data?: Record<string, unknown>;
}

export interface StoredAuditEvent extends Required<AuditEntry> {
  id: bigint;
  at: Date;
  epoch: bigint;
}

// Without an epoch (0) the insert is unconditional. With one it requires the
// reconciler_leader row to still carry it; FOR SHARE makes a concurrent
// election wait for this insert or this insert see the new epoch.
const INSERT_SQL = `
INSERT INTO audit_events (actor, kind, action, outcome, subject_type, subject_id, team_id, reason, data, epoch)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::bigint
WHERE $10::bigint = 0 OR EXISTS (SELECT 1 FROM reconciler_leader WHERE id = 1 AND epoch = $10::bigint FOR SHARE)
RETURNING id, at, actor, kind, action, outcome, subject_type, subject_id, team_id, reason, data, epoch`;

interface Row {
  id: bigint;
  at: Date;
  actor: string;
  kind: string;
  action: string;
  outcome: string;
  subject_type: string;
  subject_id: string;
  team_id: string | null;
  reason: string;
  data: unknown;
  epoch: bigint;
}

/**
 * Appends one entry and returns it as stored (with its id), or undefined when
 * `fence.reconcilerEpoch` is no longer the current reconciler epoch.
 */
export async function appendAuditEvent(prisma: PrismaClient, entry: AuditEntry, fence: { reconcilerEpoch?: bigint } = {}): Promise<StoredAuditEvent | undefined> {
  const rows = await prisma.$queryRawUnsafe<Row[]>(
    INSERT_SQL,
    entry.actor,
    entry.kind,
    entry.action,
    entry.outcome,
    entry.subjectType,
    entry.subjectId,
    entry.teamId,
    entry.reason,
    JSON.stringify(entry.data ?? {}),
    (fence.reconcilerEpoch ?? 0n).toString(),
  );
  const row = rows[0];
  if (!row) return undefined;
  return {
    id: BigInt(row.id),
    at: new Date(row.at),
    actor: row.actor,
    kind: row.kind as AuditKind,
    action: row.action,
    outcome: row.outcome as AuditOutcome,
    subjectType: row.subject_type as AuditEntry['subjectType'],
    subjectId: row.subject_id,
    teamId: row.team_id,
    reason: row.reason,
    data: (row.data ?? {}) as Record<string, unknown>,
    epoch: BigInt(row.epoch),
  };
}
