import {
  FailedPreconditionError,
  InvalidArgumentError,
  Reservations,
  UnavailableError,
  planPlacements,
  type HostResources,
  type PlacementHost,
  type PlacementPlan,
  type PlacementRequest,
  type PlacementStrategy,
} from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { HostDirectory } from '../hosts/host-directory';
import type { AllocationLedger, PlacementTransaction } from './allocation-ledger';
import { AllocationCache } from './allocation-cache';
import { ReservationBook } from './reservation-book';

/** The field of a nothing-fits FailedPrecondition: its message is Corral's own explanation, safe to show the caller. */
export const NO_FIT_FIELD = 'placement';

/** Nothing fits: the planner's reason ("no host has 4096 MB free; best candidate h-3 has 2048"). */
export function noFitError(reason: string): FailedPreconditionError {
  return new FailedPreconditionError(reason, { field: NO_FIT_FIELD });
}

// The one place the scheduler asks for hosts. It reads the fleet from the
// host directory, what each host has committed from the workload rows (the
// ledger) plus this process's in-flight reservations, runs the pure planner
// (libs/domain placement) and reserves what it placed.
//
// Two guards against over-commit:
// - in this process, plan-and-reserve steps run one after another, so
//   concurrent callers see each other's reservations (the writes overlap);
// - across scheduler replicas, the durable path (`commit`) writes the
//   workload rows inside a Postgres transaction that holds the advisory lock
//   of every host it places resources on and re-reads those hosts'
//   allocation under the lock: if another replica committed onto them since
//   the plan was made and it no longer fits, nothing is written and the
//   plan is made again from fresh numbers.

export interface PlaceOptions {
  /** The configured default (SCHEDULER_PLACEMENT_STRATEGY) when absent. */
  strategy?: PlacementStrategy;
  /** One per request, in order: the id of the workload row the placement is for. */
  reservationKeys: string[];
  /** For spread: instances already running, so a plan continues an existing spread. */
  existing?: { hostId: string; group?: string }[];
  /**
   * The durable path: writes the placed workloads' rows (state pending, with
   * their host) in the transaction that holds the hosts' locks. Called only
   * when something was placed. Its keys stay in the in-memory book only
   * while the write is in flight: once committed, the rows are the reservation.
   *
   * Without it the placements are reserved in this process only, until
   * `release` (or the book's TTL): callers must write the rows and then
   * release; another replica does not see the reservation until the row exists.
   */
  commit?: (tx: PlacementTransaction, plan: PlacementPlan) => Promise<void>;
  /**
   * With `commit`: write only when every request was placed. A plan that
   * leaves any unplaced is returned with nothing written and nothing
   * reserved (a deploy's batch goes together or not at all).
   */
  allOrNothing?: boolean;
}

export interface Placer {
  place(requests: PlacementRequest[], options: PlaceOptions): Promise<PlacementPlan>;
  release(keys: string[]): void;
}

export interface PlacementServiceOptions {
  hosts: HostDirectory;
  ledger: AllocationLedger;
  logger: Logger;
  defaultStrategy: PlacementStrategy;
  /** best-of-k's sampling; Math.random by default. */
  random?: () => number;
  /** How long an uncommitted reservation is honoured without a release. */
  reservationTtlMs?: number;
  /** Plans made again after losing a race to another replica before giving up. */
  maxAttempts?: number;
  /**
   * How long the committed sums read from the rows are reused (kept current
   * with this process's own commits; see allocation-cache.ts). 0: every plan
   * reads the rows.
   */
  allocationMaxAgeMs?: number;
  now?: () => number;
}

const DEFAULT_RESERVATION_TTL_MS = 5 * 60_000;
const DEFAULT_MAX_ATTEMPTS = 8;
const DEFAULT_ALLOCATION_MAX_AGE_MS = 1000;

/** The teams whose hosts are listed: a single team's view, else every host (feasibility filters per request). */
function teamScope(requests: readonly PlacementRequest[]): string | null {
  const teams = new Set(requests.map((r) => r.teamId));
  return teams.size === 1 ? [...teams][0] : null;
}

/** Resources each host receives from the plan. */
function planTotals(plan: PlacementPlan, requests: readonly PlacementRequest[]): Map<string, HostResources> {
  return Reservations.totals(Reservations.fromPlan(plan, [...requests], (i) => String(i)));
}

const add = (a: HostResources | undefined, b: HostResources | undefined): HostResources => ({
  cpuMillis: (a?.cpuMillis ?? 0) + (b?.cpuMillis ?? 0),
  memoryMb: (a?.memoryMb ?? 0) + (b?.memoryMb ?? 0),
});

export class PlacementService implements Placer {
  private readonly book: ReservationBook;
  private cursor = 0;
  /** The tail of this process's plan-and-reserve steps. */
  private queue: Promise<unknown> = Promise.resolve();

  private readonly allocations: AllocationCache;

  constructor(private readonly options: PlacementServiceOptions) {
    this.book = new ReservationBook(options.reservationTtlMs ?? DEFAULT_RESERVATION_TTL_MS, options.now);
    this.allocations = new AllocationCache(options.ledger, this.book, options.allocationMaxAgeMs ?? DEFAULT_ALLOCATION_MAX_AGE_MS, options.now);
  }

  /** Reservations this process holds (placed, rows not written, not released). */
  get inFlight(): number {
    return this.book.size;
  }

  /** Resources this process has reserved per host and not yet seen written (for metrics and tests). */
  reservedTotals(): Map<string, HostResources> {
    return this.book.totals();
  }

  /**
   * Plans `requests` (each reserved before the next is placed) and reserves
   * the result: durably through `commit`, else in this process. Requests
   * that fit nowhere come back in `unplaced` with the reason
   * (`explainNoFit`); it is the caller's to turn that into an error.
   */
  place(requests: PlacementRequest[], options: PlaceOptions): Promise<PlacementPlan> {
    if (options.reservationKeys.length !== requests.length) {
      return Promise.reject(new InvalidArgumentError(`${requests.length} requests need as many reservation keys (got ${options.reservationKeys.length})`, { field: 'reservationKeys' }));
    }
    if (new Set(options.reservationKeys).size !== requests.length) return Promise.reject(new InvalidArgumentError('reservation keys must be distinct', { field: 'reservationKeys' }));
    return this.placeAll(requests, options);
  }

  release(keys: string[]): void {
    this.book.release(keys);
  }

  /** Runs `step` after every step queued before it, whatever their outcome. */
  private serial<T>(step: () => Promise<T>): Promise<T> {
    const run = this.queue.then(step);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * What the book holds and which rows the SQL must leave out, captured in
   * one synchronous step: a key released in between (its row just written)
   * would otherwise be counted by neither.
   */
  private snapshot(ours: ReadonlySet<string>): { exclude: string[]; booked: Map<string, HostResources> } {
    return { exclude: [...new Set([...this.book.keys(), ...ours])], booked: this.book.totals(ours) };
  }

  private async placeAll(requests: PlacementRequest[], options: PlaceOptions): Promise<PlacementPlan> {
    const { ledger, logger } = this.options;
    const strategy = options.strategy ?? this.options.defaultStrategy;
    const ours = new Set(options.reservationKeys);
    const fleet = await this.options.hosts.list(teamScope(requests));
    const capacityOf = new Map(fleet.map((h) => [h.id, h.capacity]));
    const maxAttempts = this.options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;

    let fresh = false;
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      // Plan and reserve are one step per process: concurrent callers each see the others' reservations.
      const plan = await this.serial(async () => {
        const planOn = async (readFresh: boolean) => {
          const { exclude, booked } = this.snapshot(ours);
          const committed = await this.allocations.committed(exclude, readFresh);
          const hosts: PlacementHost[] = fleet.map((h) => (h.capacity ? { ...h, allocated: add(committed.totals.get(h.id), booked.get(h.id)) } : h));
          const planned = planPlacements(hosts, requests, {
            strategy,
            cursor: this.cursor,
            existing: options.existing,
            ...(strategy === 'best-of-k' ? { random: this.options.random ?? Math.random } : {}),
          });
          return { planned, fromCache: committed.fromCache };
        };
        // Only the durable path reuses sums: its re-check under the host lock catches what they miss
        // (another replica's rows); a plan without commit has no such backstop and reads the rows.
        const first = await planOn(fresh || !options.commit);
        // Reused sums may still count workloads that have stopped since: a no-fit is believed only from fresh ones.
        const planned = first.fromCache && first.planned.unplaced.length > 0 ? (await planOn(true)).planned : first.planned;
        this.book.add(Reservations.fromPlan(planned, requests, (i) => options.reservationKeys[i]));
        this.cursor = planned.nextCursor;
        return planned;
      });
      if (!options.commit || plan.placements.length === 0) return plan;
      if (options.allOrNothing && plan.unplaced.length > 0) {
        this.book.release(options.reservationKeys);
        return plan;
      }

      // The write runs outside the queue, so this process's next plans overlap
      // with it; they count this plan through the book until its rows exist.
      const commit = options.commit;
      const adds = planTotals(plan, requests);
      const { exclude, booked } = this.snapshot(ours);
      let written = false;
      try {
        written = await ledger.writeLocked(
          [...adds.keys()],
          exclude,
          (underLock) =>
            [...adds].every(([hostId, more]) => {
              const capacity = capacityOf.get(hostId);
              if (!capacity) return true;
              const after = add(add(underLock.get(hostId), booked.get(hostId)), more);
              return after.cpuMillis <= capacity.cpuMillis && after.memoryMb <= capacity.memoryMb;
            }),
          (tx) => commit(tx, plan),
        );
      } finally {
        if (written) {
          // The rows hold the resources from now on, and the cached sums know it.
          this.allocations.settled(this.book.settle(options.reservationKeys));
        } else {
          // The reservation is withdrawn.
          this.book.release(options.reservationKeys);
        }
      }
      if (written) return plan;
      // Another replica committed onto these hosts since the sums were read.
      fresh = true;
      logger.debug('placement lost a race with another scheduler replica; planning again', { attempt, hosts: [...adds.keys()] });
    }
    throw new UnavailableError(`placement kept losing races with other scheduler replicas (${maxAttempts} attempts); try again`);
  }
}

/** What one instance of a workload spec asks placement for (absent fields are the driver's default: not counted). */
export function resourcesRequest(resources: { vcpus?: number; memoryMb?: number } | undefined): PlacementRequest['resources'] {
  if (!resources || (resources.vcpus === undefined && resources.memoryMb === undefined)) return undefined;
  return { vcpus: resources.vcpus ?? 0, memoryMb: resources.memoryMb ?? 0 };
}
