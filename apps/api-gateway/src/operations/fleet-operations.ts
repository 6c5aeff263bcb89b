import { InternalError, NotFoundError, PermissionDeniedError, isCorralError } from '@corral/domain';
import type { hostRegistryV1, schedulerV1 } from '@corral/proto';
import { HostInUseError } from '../errors/host-in-use';
import { teamScopeOf } from './caller';
import type { OperationContext } from './corral-operations';
import type { CorralPorts } from './ports';

// Fleet membership in the public API (REST and gRPC alike): drain, undrain
// and delete hosts, fleet health, registration tokens. host-registry owns the
// rules (a team manages its own hosts and tokens, only admins platform ones)
// and checks them again; the gateway adds what needs the scheduler too:
// which workloads still live on a host, and stopping them before a forced
// delete.

/** Stops in flight at once during a forced delete: each waits for its agent's grace period. */
const STOP_CONCURRENCY = 4;
/**
 * SIGTERM grace of those stops. Short (force means "do not wait long") and
 * well inside the gateway's backend deadline, so a workload that ignores
 * SIGTERM is killed rather than reported as not stopped.
 */
export const FORCE_STOP_GRACE_SECONDS = 5;

/** How long a drain with migrate may take in all (every workload of the host, max_parallel at a time). */
export const MIGRATE_DEADLINE_MS = 30 * 60_000;

export interface DeleteHostResult {
  id: string;
  /** False when the host had already been deleted. */
  deletedNow: boolean;
  /** Live workloads the host's last heartbeat reported when it was deleted. */
  affectedWorkloadIds: string[];
  /** Workloads stopped through the scheduler first (force). */
  stoppedWorkloadIds: string[];
  /** Workloads whose stop did not get through to their host (unreachable, or no answer in time; force); left for the reconciler. */
  unreachableWorkloadIds: string[];
}

export interface FleetOperations {
  /** No new placements on the host. Idempotent. */
  drainHost(ctx: OperationContext, id: string): Promise<hostRegistryV1.Host>;
  /**
   * Moves the live workloads of a draining host to other hosts, at most
   * `maxParallel` at a time (scheduler MigrateHostWorkloads): one outcome
   * per workload. Idempotent. Call after drainHost.
   */
  migrateHostWorkloads(ctx: OperationContext, id: string, options: { maxParallel?: number }): Promise<schedulerV1.WorkloadMigration[]>;
  /** Takes placements again. Idempotent. */
  undrainHost(ctx: OperationContext, id: string): Promise<hostRegistryV1.Host>;
  /**
   * Removes the host for good. Without `force`, a HostInUseError (409) naming
   * the workloads still live there; with it, the host is drained, they are
   * stopped, then it is deleted. Idempotent: deleting a deleted host answers
   * `deletedNow: false`.
   */
  deleteHost(ctx: OperationContext, id: string, options: { force: boolean }): Promise<DeleteHostResult>;
  /** Admin keys only. */
  getFleetHealth(ctx: OperationContext): Promise<hostRegistryV1.GetFleetHealthResponse>;
  /** The caller's team's tokens (every token for an admin), newest first; never their secrets. */
  listRegistrationTokens(ctx: OperationContext): Promise<hostRegistryV1.RegistrationToken[]>;
  /** Idempotent: revoking a revoked token returns it unchanged. */
  revokeRegistrationToken(ctx: OperationContext, id: string): Promise<hostRegistryV1.RegistrationToken>;
}

const codeOf = (err: unknown) => (isCorralError(err) ? err.code : undefined);

function present<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new InternalError(`backend answered without ${what}`);
  return value;
}

/** Runs `task` over `items`, at most `limit` at a time. */
async function eachLimited<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await task(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export function createFleetOperations(ports: CorralPorts, checkId: (id: string) => string): FleetOperations {
  const { scheduler, hostRegistry } = ports;
  const opts = (ctx: OperationContext) => (ctx.signal ? { signal: ctx.signal } : {});

  /**
   * The host, if the caller may manage it; undefined when the registry no
   * longer lists it (deleted, or never there: its DeleteHost then decides).
   * The same rules host-registry applies, checked here first so that nothing
   * is stopped on behalf of a caller who may not delete the host.
   */
  const manageableHost = async (ctx: OperationContext, id: string): Promise<hostRegistryV1.Host | undefined> => {
    const teamId = teamScopeOf(ctx.caller);
    let host: hostRegistryV1.Host;
    try {
      host = present((await hostRegistry.getHost({ id }, opts(ctx))).host, 'a host');
    } catch (err) {
      if (codeOf(err) === 'NOT_FOUND') return undefined;
      throw err;
    }
    if (teamId !== '' && host.teamId !== '' && host.teamId !== teamId) throw new NotFoundError(`host ${id} not found`);
    if (teamId !== '' && host.teamId === '') throw new PermissionDeniedError('platform hosts are managed by platform admins');
    return host;
  };

  return {
    async drainHost(ctx, id) {
      const res = await hostRegistry.drainHost({ id: checkId(id), teamId: teamScopeOf(ctx.caller) }, opts(ctx));
      return present(res.host, 'a host');
    },

    async migrateHostWorkloads(ctx, id, { maxParallel }) {
      // host-registry has applied the caller's rules by draining it; the scheduler moves only the caller's team's workloads.
      const res = await scheduler.migrateHostWorkloads(
        { hostId: checkId(id), teamId: teamScopeOf(ctx.caller), maxParallel: maxParallel ?? 1, readyTimeoutSeconds: 0 },
        // Each move waits for its replacement to run and its original to stop: far beyond an ordinary backend call.
        { ...opts(ctx), deadlineMs: MIGRATE_DEADLINE_MS },
      );
      return res.migrations;
    },

    async undrainHost(ctx, id) {
      const res = await hostRegistry.undrainHost({ id: checkId(id), teamId: teamScopeOf(ctx.caller) }, opts(ctx));
      return present(res.host, 'a host');
    },

    async deleteHost(ctx, id, { force }) {
      checkId(id);
      const teamId = teamScopeOf(ctx.caller);
      const stoppedWorkloadIds: string[] = [];
      const unreachableWorkloadIds: string[] = [];
      const host = await manageableHost(ctx, id);
      if (host) {
        if (force) {
          // Nothing new lands there while its workloads are being stopped.
          // A host that cannot be drained (already down) has nothing landing.
          await hostRegistry.drainHost({ id, teamId }, opts(ctx)).catch((err: unknown) => {
            if (codeOf(err) !== 'FAILED_PRECONDITION') throw err;
          });
        }
        const { workloads } = await scheduler.listWorkloads({ teamId, hostId: id, excludeTerminal: true }, opts(ctx));
        if (!force && workloads.length > 0) throw new HostInUseError(id, workloads.map((w) => w.id));
        await eachLimited(workloads, STOP_CONCURRENCY, async (w) => {
          try {
            await scheduler.stopWorkload({ id: w.id, teamId, timeoutSeconds: FORCE_STOP_GRACE_SECONDS }, opts(ctx));
            stoppedWorkloadIds.push(w.id);
          } catch (err) {
            const code = codeOf(err);
            // Gone meanwhile: nothing to stop.
            if (code === 'NOT_FOUND') return;
            // Force means the host goes even when its agent cannot be
            // reached or does not answer (a dead host is the usual reason
            // to force).
            if (code === 'UNAVAILABLE' || code === 'DEADLINE_EXCEEDED') unreachableWorkloadIds.push(w.id);
            else throw err;
          }
        });
      }
      let res: hostRegistryV1.DeleteHostResponse;
      try {
        res = await hostRegistry.deleteHost({ id, teamId, force }, opts(ctx));
      } catch (err) {
        // The scheduler knows of nothing live there, but the host's last
        // heartbeat still reports workloads (e.g. ones just stopped).
        if (!force && codeOf(err) === 'FAILED_PRECONDITION') throw new HostInUseError(id, []);
        throw err;
      }
      return {
        id,
        deletedNow: res.deletedNow,
        affectedWorkloadIds: res.affectedWorkloadIds,
        stoppedWorkloadIds: stoppedWorkloadIds.sort(),
        unreachableWorkloadIds: unreachableWorkloadIds.sort(),
      };
    },

    async getFleetHealth(ctx) {
      if (!ctx.caller.admin) throw new PermissionDeniedError('fleet health is shown to platform admins only');
      return hostRegistry.getFleetHealth({}, opts(ctx));
    },

    async listRegistrationTokens(ctx) {
      const res = await hostRegistry.listRegistrationTokens({ teamId: teamScopeOf(ctx.caller) }, opts(ctx));
      return res.tokens;
    },

    async revokeRegistrationToken(ctx, id) {
      const res = await hostRegistry.revokeRegistrationToken({ id: checkId(id), teamId: teamScopeOf(ctx.caller) }, opts(ctx));
      return present(res.token, 'a registration token');
    },
  };
}
