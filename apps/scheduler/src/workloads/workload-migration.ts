import { FailedPreconditionError, TERMINAL_STATES, isCorralError, type InstanceState } from '@corral/domain';
import type { Workload as WorkloadRow } from '@corral/db';
import type { Logger } from '@corral/logging';
import type { HostDirectory } from '../hosts/host-directory';
import type { WorkloadService } from './workload-service';
import { membershipOfRow, specOfRow, type WorkloadStore } from './workload-store';

// Drain that moves workloads away (Nomad's drain with migrate.max_parallel;
// Kubernetes evicts and lets controllers replace): for each live workload of
// a draining host, a replacement with the same spec and service slot is
// placed elsewhere (the draining host is not online, so placement never
// picks it), waited for until it runs, and only then is the original
// stopped and torn down. A replacement that does not come up leaves the
// original running.
//
// Idempotent across crashes: the link "X is replaced by Y" is a
// `replaced-by` event on the original, written in the same transaction as
// Y's row. Running the migration again finds it and carries on with Y
// (waits for it, retires X) instead of creating a second replacement; only
// a replacement that has itself ended (failed, stopped, retired) is
// replaced again.

export const REPLACED_BY_EVENT = 'replaced-by';

export type MigrationOutcome = 'moved' | 'failed';

export interface WorkloadMigrationResult {
  workloadId: string;
  name: string;
  outcome: MigrationOutcome;
  replacementId?: string;
  toHostId?: string;
  reason: string;
}

export interface MigrateOptions {
  /** Workloads moved at once (default 1). */
  maxParallel?: number;
  /** How long a replacement may take to be running (default 120 s). */
  readyTimeoutMs?: number;
}

export interface WorkloadMigrationDeps {
  store: WorkloadStore;
  workloads: WorkloadService;
  hosts: HostDirectory;
  logger: Logger;
  /** How often a replacement's state is read while waiting for it. */
  pollMs?: number;
  /** Grace period of the original's stop. */
  stopTimeoutSeconds?: number;
}

const DEFAULT_READY_TIMEOUT_MS = 120_000;
/** States a workload is moved from: it runs, or may, on the draining host. `stopping` is already going away. */
const MOVABLE: ReadonlySet<InstanceState> = new Set(['pending', 'provisioning', 'running', 'paused', 'missing']);

/** Our own typed messages are safe to report; anything else is summarised. */
function failureText(err: unknown): string {
  if (!isCorralError(err) || err.code === 'INTERNAL') return 'internal error';
  if (err.code === 'UNAVAILABLE' || err.code === 'DEADLINE_EXCEEDED') return 'host agent unreachable';
  return err.message;
}

async function eachLimited<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await task(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class WorkloadMigration {
  constructor(private readonly deps: WorkloadMigrationDeps) {}

  /** Moves every live workload of draining host `hostId` (only `teamId`'s, unless null); one result per workload. */
  async migrateHost(hostId: string, teamId: string | null, options: MigrateOptions = {}): Promise<WorkloadMigrationResult[]> {
    const { store, hosts, logger } = this.deps;
    const host = await hosts.get(hostId);
    if (host.status !== 'draining') throw new FailedPreconditionError(`host ${host.name} is ${host.status}: drain it before moving its workloads`);
    const live = (await store.list(teamId, { hostId, excludeTerminal: true })).filter((w) => MOVABLE.has(w.state as InstanceState));
    const results = new Map<string, WorkloadMigrationResult>();
    await eachLimited(live, options.maxParallel ?? 1, async (w) => {
      const result = await this.migrateOne(w, host.name, options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
      logger.info('workload migration', { fromHostId: hostId, ...result });
      results.set(w.id, result);
    });
    // In the order they were listed (newest first), whatever order they finished in.
    return live.flatMap((w) => results.get(w.id) ?? []);
  }

  private async migrateOne(original: WorkloadRow, hostName: string, readyTimeoutMs: number): Promise<WorkloadMigrationResult> {
    const { workloads } = this.deps;
    const base = { workloadId: original.id, name: original.name };
    let replacement = await this.linkedReplacement(original.id);
    if (!replacement) {
      try {
        replacement = await workloads.placeAndStart(specOfRow(original), original.teamId, {
          membership: membershipOfRow(original),
          why: `replaces ${original.id} from draining host ${hostName}`,
          alsoRecord: async (tx, newId) => {
            await tx.workloadEvent.create({
              data: { workloadId: original.id, type: REPLACED_BY_EVENT, state: original.state, message: `replaced by ${newId} (draining host ${hostName})`, data: { replacementId: newId } },
            });
          },
        });
      } catch (err) {
        return { ...base, outcome: 'failed', reason: `no replacement: ${failureText(err)}` };
      }
    }
    const to = { replacementId: replacement.id, toHostId: replacement.hostId ?? undefined };
    const ready = await this.untilRunning(replacement.id, readyTimeoutMs);
    if (ready.state !== 'running') {
      const why = TERMINAL_STATES.has(ready.state as InstanceState) ? `replacement ${ready.state}${ready.reason ? `: ${ready.reason}` : ''}` : `replacement still ${ready.state} after ${Math.round(readyTimeoutMs / 1000)} s`;
      return { ...base, ...to, outcome: 'failed', reason: `${why}; the original keeps running` };
    }
    try {
      await workloads.stop(original.id, null, this.deps.stopTimeoutSeconds);
      await workloads.destroy(original.id, null, { force: true, timeoutSeconds: this.deps.stopTimeoutSeconds });
    } catch (err) {
      return { ...base, ...to, outcome: 'failed', reason: `replacement running, but the original could not be retired: ${failureText(err)}` };
    }
    return { ...base, ...to, outcome: 'moved', reason: `replaced by ${replacement.id}, running` };
  }

  /** The replacement recorded for `originalId`, unless it has itself ended (then a new one is due). */
  private async linkedReplacement(originalId: string): Promise<WorkloadRow | undefined> {
    const { store } = this.deps;
    const links = await store.prisma.workloadEvent.findMany({ where: { workloadId: originalId, type: REPLACED_BY_EVENT }, orderBy: { createdAt: 'desc' }, take: 1 });
    const replacementId = (links[0]?.data as { replacementId?: string } | null)?.replacementId;
    if (!replacementId) return undefined;
    const row = await store.get(replacementId, null).catch(() => undefined);
    if (!row || TERMINAL_STATES.has(row.state as InstanceState) || row.state === 'tearing_down') return undefined;
    return row;
  }

  /** The workload once it runs, has ended, or the time is up. */
  private async untilRunning(id: string, timeoutMs: number): Promise<WorkloadRow> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const row = await this.deps.store.get(id, null);
      const state = row.state as InstanceState;
      if (state === 'running' || TERMINAL_STATES.has(state) || state === 'tearing_down' || Date.now() >= deadline) return row;
      await sleep(this.deps.pollMs ?? 250);
    }
  }
}
