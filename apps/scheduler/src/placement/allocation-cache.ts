import { Reservations, type HostResources, type Reservation } from '@corral/domain';
import type { AllocationLedger } from './allocation-ledger';
import type { ReservationBook } from './reservation-book';

// The committed allocation per host, as last read from the rows, kept for up
// to `maxAgeMs` so that each plan need not scan every live workload row.
//
// It is only ever too high or too low in ways placement tolerates:
// - this process's own commits are added as they settle (even while a
//   refresh is in flight: the refresh left those keys out, being booked);
// - a key released or lapsed from the book (a caller wrote its row itself,
//   or gave up) makes the sums stale, so the next read goes to the rows;
// - another replica's commits (and rows written outside placement, e.g. a
//   restore on its snapshot's host) are missing until the next refresh: the
//   durable path's re-check under the host lock reads the rows and catches
//   that (and the plan is made again from fresh sums), which is why only the
//   durable path uses this cache;
// - workloads that stopped meanwhile are still counted: a plan that places
//   nothing is made again from fresh sums before it is believed.

interface Cached {
  readAt: number;
  removals: number;
  totals: Map<string, HostResources>;
}

export class AllocationCache {
  private cached?: Cached;
  /** Settled while a read is in flight: added to its result. */
  private settledDuringRead?: Reservation[];

  constructor(
    private readonly ledger: AllocationLedger,
    private readonly book: ReservationBook,
    private readonly maxAgeMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Committed sums per host, leaving out `exclude` — which must be the
   * book's keys (plus the caller's) taken in the same synchronous step as
   * the book's totals the caller adds to these.
   */
  async committed(exclude: readonly string[], fresh: boolean): Promise<{ totals: Map<string, HostResources>; fromCache: boolean }> {
    const c = this.cached;
    // A copy, taken now (synchronously, like the caller's snapshot of the book), so later settles do not count twice.
    if (!fresh && c && this.now() - c.readAt < this.maxAgeMs && c.removals === this.book.removals) return { totals: new Map(c.totals), fromCache: true };
    const readAt = this.now();
    const removals = this.book.removals;
    // Reads happen one at a time (in the placement queue), so this list is this read's.
    this.settledDuringRead = [];
    let totals: Map<string, HostResources>;
    try {
      totals = await this.ledger.allocated(exclude);
    } catch (err) {
      this.cached = undefined;
      this.settledDuringRead = undefined;
      throw err;
    }
    const settled = this.settledDuringRead;
    this.settledDuringRead = undefined;
    if (this.maxAgeMs > 0) this.cached = { readAt, removals, totals: addAll(new Map(totals), settled) };
    return { totals, fromCache: false };
  }

  /** This process committed rows for these reservations (just settled from the book). */
  settled(reservations: readonly Reservation[]): void {
    if (this.cached) addAll(this.cached.totals, reservations);
    this.settledDuringRead?.push(...reservations);
  }

  invalidate(): void {
    this.cached = undefined;
  }
}

function addAll(totals: Map<string, HostResources>, reservations: readonly Reservation[]): Map<string, HostResources> {
  for (const [hostId, more] of Reservations.totals(reservations)) {
    const t = totals.get(hostId);
    totals.set(hostId, { cpuMillis: (t?.cpuMillis ?? 0) + more.cpuMillis, memoryMb: (t?.memoryMb ?? 0) + more.memoryMb });
  }
  return totals;
}
