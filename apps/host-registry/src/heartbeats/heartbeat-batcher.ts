import { performance } from 'node:perf_hooks';
import type { PrismaClient } from '@corral/db';
import type { HostHeartbeat, WorkloadStatus } from '@corral/proto';
import { INSTANCE_STATES, type InstanceState } from '@corral/domain';
import { LatencyWindow } from './latency-window';

/** A heartbeat's workload state in the stored (lowercase) form; unknown values are kept as 'missing'. */
function reportedState(state: string): InstanceState {
  const name = String(state).replace(/^INSTANCE_STATE_/, '').toLowerCase();
  return (INSTANCE_STATES as readonly string[]).includes(name) ? (name as InstanceState) : 'missing';
}

interface Pending {
  hb: HostHeartbeat;
  receivedAt: Date;
  /** performance.now() at receipt, for the processing latency. */
  receivedMono: number;
}

/** Hosts whose heartbeat brought them back from unreachable in one flush. */
export interface ReturnedHost {
  hostId: string;
  workloads: WorkloadStatus[];
}

export interface FlushResult {
  /** Heartbeats in the batch (after in-memory coalescing). */
  batch: number;
  /** How long the write took. */
  durationMs: number;
  applied: number;
  returned: ReturnedHost[];
}

export interface HeartbeatBatcherOptions {
  /** Told about every failed flush (the brake counts them as database trouble). */
  onError?: (err: unknown) => void;
  /** Told about every successful flush. */
  onFlushed?: (result: FlushResult) => void;
  now?: () => Date;
}

/** Whether heartbeat `a` supersedes `b` of the same host (the rule the UPDATE enforces too). */
function newer(a: HostHeartbeat, b: HostHeartbeat): boolean {
  if (a.bootId === b.bootId) return a.seq > b.seq;
  const as = a.sentAt?.getTime() ?? 0;
  const bs = b.sentAt?.getTime() ?? 0;
  return as > bs;
}

// Timestamps go as ISO text into `timestamp(3)` (the columns hold UTC without
// a zone, as Prisma writes them), so the session time zone cannot shift them.
const APPLY_SQL = `
UPDATE hosts h SET
  boot_id = v.boot_id,
  last_seq = v.seq,
  last_heartbeat_at = v.received_at,
  last_heartbeat_sent_at = v.sent_at,
  capacity = COALESCE(v.capacity, h.capacity),
  usage = COALESCE(v.usage, h.usage),
  drivers = COALESCE(v.drivers, h.drivers),
  agent_address = COALESCE(v.agent_address, h.agent_address),
  reported_workloads = v.workloads,
  updated_at = v.received_at
FROM jsonb_to_recordset($1::jsonb) AS v(
  id text, boot_id text, seq bigint, received_at timestamp(3), sent_at timestamp(3),
  capacity jsonb, usage jsonb, drivers jsonb, agent_address text, workloads jsonb)
WHERE h.id = v.id
  AND h.deleted_at IS NULL
  AND (
    (h.boot_id = v.boot_id AND h.last_seq < v.seq)
    OR h.boot_id IS NULL
    OR (h.boot_id <> v.boot_id AND (h.last_heartbeat_sent_at IS NULL OR h.last_heartbeat_sent_at < v.sent_at))
  )
RETURNING h.id`;

// A separate statement, after the heartbeats are stored, so the row lock
// decides which hosts really flipped: a host the monitor marks unreachable
// concurrently is either seen here (and comes back) or was re-checked by the
// monitor against the new last_heartbeat_at (and never went).
const RETURN_SQL = `
UPDATE hosts SET status = 'online', updated_at = now() AT TIME ZONE 'UTC'
WHERE id = ANY($1::text[]) AND status = 'unreachable' AND deleted_at IS NULL
RETURNING id`;

/**
 * Heartbeat intake at fleet scale. Each heartbeat is kept in memory (only the
 * newest per host: the same (boot, seq) order the database enforces) and
 * every `flushIntervalMs` the batch is written with one UPDATE … FROM
 * jsonb_to_recordset, guarded per row exactly like a single heartbeat: within
 * a boot only a higher seq, a new boot only if sent later, never a deleted
 * host. So duplicates, late and reordered heartbeats stay harmless across
 * replicas, and 10,000 hosts at 1 Hz cost a few statements per second instead
 * of 10,000. Liveness reads `last_heartbeat_at`, which lags receipt by at most
 * one flush interval; the monitor's timeout is several heartbeat intervals.
 * A failed flush puts its heartbeats back (unless newer ones arrived).
 */
export class HeartbeatBatcher {
  private pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<FlushResult> | undefined;
  private writeStarted: number | undefined;
  private readonly now: () => Date;
  readonly latency = new LatencyWindow(100_000);
  readonly flushDurations = new LatencyWindow(1000);
  received = 0;
  applied = 0;
  /** Superseded in memory or refused by the guard (stale, unknown, deleted). */
  dropped = 0;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly options: HeartbeatBatcherOptions = {},
  ) {
    this.now = options.now ?? (() => new Date());
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** How long the write in progress has been running (0 when none). */
  get writingForMs(): number {
    return this.writeStarted === undefined ? 0 : performance.now() - this.writeStarted;
  }

  offer(hb: HostHeartbeat, receivedAt: Date = this.now()): void {
    this.received += 1;
    const current = this.pending.get(hb.hostId);
    if (current && !newer(hb, current.hb)) {
      this.dropped += 1;
      return;
    }
    if (current) this.dropped += 1;
    this.pending.set(hb.hostId, { hb, receivedAt, receivedMono: performance.now() });
  }

  start(flushIntervalMs: number): void {
    this.timer = setInterval(() => {
      if (!this.flushing) void this.flush().catch(() => undefined);
    }, flushIntervalMs);
    this.timer.unref();
  }

  /** Writes what is pending now. Concurrent calls share one flush. */
  flush(): Promise<FlushResult> {
    if (this.flushing) return this.flushing.then(() => this.flush());
    const run = this.write().finally(() => (this.flushing = undefined));
    this.flushing = run;
    return run;
  }

  private async write(): Promise<FlushResult> {
    if (this.pending.size === 0) return { batch: 0, durationMs: 0, applied: 0, returned: [] };
    const batch = this.pending;
    this.pending = new Map();
    const rows = [...batch.values()].map(({ hb, receivedAt }) => ({
      id: hb.hostId,
      boot_id: hb.bootId,
      seq: hb.seq,
      received_at: receivedAt.toISOString(),
      sent_at: (hb.sentAt ?? receivedAt).toISOString(),
      capacity: hb.capacity ? { ...hb.capacity } : null,
      usage: hb.usage ? { ...hb.usage } : null,
      drivers: hb.drivers.length ? hb.drivers.map((d) => ({ ...d })) : null,
      agent_address: hb.agentAddress || null,
      workloads: hb.workloads.map((w) => ({ workloadId: w.workloadId, state: reportedState(w.state) })),
    }));
    const started = performance.now();
    this.writeStarted = started;
    let appliedIds: string[];
    let returnedIds: string[];
    try {
      [appliedIds, returnedIds] = await this.prisma.$transaction(async (tx) => {
        const applied = (await tx.$queryRawUnsafe<Array<{ id: string }>>(APPLY_SQL, JSON.stringify(rows))).map((r) => r.id);
        if (applied.length === 0) return [applied, []];
        const back = (await tx.$queryRawUnsafe<Array<{ id: string }>>(RETURN_SQL, applied)).map((r) => r.id);
        return [applied, back];
      });
    } catch (err) {
      // Put the batch back under anything newer that arrived meanwhile, so a
      // database blip loses no last-seen time once it recovers.
      for (const [hostId, p] of batch) {
        const later = this.pending.get(hostId);
        if (!later || newer(p.hb, later.hb)) this.pending.set(hostId, p);
      }
      this.options.onError?.(err);
      throw err;
    } finally {
      this.writeStarted = undefined;
    }
    const done = performance.now();
    this.flushDurations.add(done - started);
    for (const id of appliedIds) {
      const p = batch.get(id);
      if (p) this.latency.add(done - p.receivedMono);
    }
    this.applied += appliedIds.length;
    this.dropped += batch.size - appliedIds.length;
    const result: FlushResult = {
      batch: batch.size,
      durationMs: done - started,
      applied: appliedIds.length,
      returned: returnedIds.map((hostId) => ({ hostId, workloads: batch.get(hostId)?.hb.workloads ?? [] })),
    };
    this.options.onFlushed?.(result);
    return result;
  }

  /** Stops the timer and writes what is left. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flush().catch(() => undefined);
  }
}
