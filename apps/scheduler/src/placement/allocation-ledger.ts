import type { HostResources, InstanceState } from '@corral/domain';
import type { Prisma, PrismaClient } from '@corral/db';

// What hosts have committed, as Postgres knows it: the workload rows
// themselves are the durable reservations. A row is written `pending` with
// its host before anything is started, so summing the resources of rows in
// the states below is the allocation every scheduler replica agrees on.

/** States whose workloads hold their host's resources (could run, or will). */
export const HOLDING_STATES: readonly InstanceState[] = ['pending', 'provisioning', 'running', 'paused', 'stopping', 'missing'];

/** The transaction a placement's rows are written in (while the host locks are held). */
export type PlacementTransaction = Prisma.TransactionClient;

/**
 * Class key of the per-host transaction-level advisory locks (the two-int
 * form: class, hashtext(host id)). Distinct from Corral's bigint locks
 * ("corrl" + n, the monitor, Prisma migrate), which live in another key space.
 */
export const PLACEMENT_LOCK_CLASS = 0x636f7203; // "cor" + 3

/** The durable side of placement: allocations, and the locked write of new reservations. */
export interface AllocationLedger {
  /** Resources held per host id by live workload rows, leaving out the rows in `exclude` (the caller counts those itself). */
  allocated(exclude: readonly string[], hostIds?: readonly string[]): Promise<Map<string, HostResources>>;
  /**
   * In one transaction: takes the advisory lock of each host in `lockHostIds`
   * (sorted, so two replicas never wait on each other in a cycle), reads those
   * hosts' allocation afresh and hands it to `verify`. Only when it accepts is
   * `write` run in the same transaction, so the rows it writes become visible
   * to other replicas no earlier than the locks are released. Answers false
   * (and writes nothing) when `verify` refuses.
   */
  writeLocked(
    lockHostIds: readonly string[],
    exclude: readonly string[],
    verify: (fresh: Map<string, HostResources>) => boolean,
    write: (tx: PlacementTransaction) => Promise<void>,
  ): Promise<boolean>;
}

// One grouped scan per call; the resources JSON is { vcpus?, memoryMb? }.
// Absent fields are the driver's default, which placement does not know: 0.
const allocatedSql = (where: string) => `
SELECT host_id AS "hostId",
       COALESCE(SUM(ROUND(COALESCE((resources->>'vcpus')::numeric, 0) * 1000)), 0)::bigint AS "cpuMillis",
       COALESCE(SUM(COALESCE((resources->>'memoryMb')::numeric, 0)), 0)::bigint AS "memoryMb"
  FROM workloads
 WHERE ${where}
   AND state = ANY($1::text[])
   AND NOT (id = ANY($2::text[]))
 GROUP BY host_id`;
const ALL_HOSTS_SQL = allocatedSql('host_id IS NOT NULL');
// A statement of its own (no "$3 IS NULL OR …"), so the re-check under the lock uses the host_id index.
const SOME_HOSTS_SQL = allocatedSql('host_id = ANY($3::text[])');

type Queryable = Pick<PrismaClient, '$queryRawUnsafe'> | PlacementTransaction;

async function readAllocated(db: Queryable, exclude: readonly string[], hostIds: readonly string[] | undefined): Promise<Map<string, HostResources>> {
  const rows = await (hostIds
    ? db.$queryRawUnsafe<Array<{ hostId: string; cpuMillis: bigint; memoryMb: bigint }>>(SOME_HOSTS_SQL, [...HOLDING_STATES], [...exclude], [...hostIds])
    : db.$queryRawUnsafe<Array<{ hostId: string; cpuMillis: bigint; memoryMb: bigint }>>(ALL_HOSTS_SQL, [...HOLDING_STATES], [...exclude]));
  return new Map(rows.map((r) => [r.hostId, { cpuMillis: Number(r.cpuMillis), memoryMb: Number(r.memoryMb) }]));
}

export function postgresAllocationLedger(prisma: PrismaClient): AllocationLedger {
  return {
    allocated: (exclude, hostIds) => readAllocated(prisma, exclude, hostIds),
    async writeLocked(lockHostIds, exclude, verify, write) {
      const hostIds = [...new Set(lockHostIds)].sort();
      return prisma.$transaction(
        async (tx) => {
          for (const hostId of hostIds) await tx.$executeRawUnsafe('SELECT pg_advisory_xact_lock($1::int, hashtext($2))', PLACEMENT_LOCK_CLASS, hostId);
          // READ COMMITTED: this statement sees every row committed by whoever held these locks before us.
          if (hostIds.length > 0 && !verify(await readAllocated(tx, exclude, hostIds))) return false;
          await write(tx);
          return true;
        },
        { timeout: 30_000, maxWait: 10_000 },
      );
    },
  };
}
