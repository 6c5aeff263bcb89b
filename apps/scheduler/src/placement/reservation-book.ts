import { Reservations, type HostResources, type Reservation } from '@corral/domain';

// In-flight reservations of this scheduler process: resources promised to
// placements whose workload rows are not written yet (a caller that plans
// first and records later). Keys are workload ids, the same ids the rows
// get, so a key is counted exactly once: through the book while it holds the
// key, through its row otherwise (the ledger leaves booked keys out of its
// sums). A forgotten key cannot leak capacity for ever: entries lapse after
// `ttlMs`.

interface Entry {
  reservation: Reservation;
  expiresAt: number;
}

export class ReservationBook {
  private readonly entries = new Map<string, Entry>();
  /** Keys dropped by release or lapse: each may now be counted by its row instead (see `removals`). */
  private removed = 0;

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Each replaces an entry with the same key. */
  add(reservations: readonly Reservation[]): void {
    const expiresAt = this.now() + this.ttlMs;
    for (const reservation of reservations) this.entries.set(reservation.key, { reservation, expiresAt });
  }

  release(keys: Iterable<string>): void {
    for (const key of keys) if (this.entries.delete(key)) this.removed++;
  }

  /**
   * Drops keys whose rows the caller has just written and counts itself
   * (the placement service's own commits): not a removal in the sense of
   * `removals`, since nobody needs to read the rows again to know them.
   */
  settle(keys: Iterable<string>): Reservation[] {
    const settled: Reservation[] = [];
    for (const key of keys) {
      const entry = this.entries.get(key);
      if (entry) settled.push(entry.reservation);
      this.entries.delete(key);
    }
    return settled;
  }

  /** How many keys were released or lapsed so far: when it changes, sums read from the rows before are stale. */
  get removals(): number {
    this.expire();
    return this.removed;
  }

  /** Live reservations, leaving out `except` (keys the caller is placing again). */
  list(except: ReadonlySet<string> = new Set()): Reservation[] {
    this.expire();
    return [...this.entries.values()].filter((e) => !except.has(e.reservation.key)).map((e) => e.reservation);
  }

  keys(): string[] {
    this.expire();
    return [...this.entries.keys()];
  }

  /** Reserved totals per host id, leaving out `except`. */
  totals(except: ReadonlySet<string> = new Set()): Map<string, HostResources> {
    return Reservations.totals(this.list(except));
  }

  get size(): number {
    this.expire();
    return this.entries.size;
  }

  private expire() {
    const now = this.now();
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt > now) continue;
      this.entries.delete(key);
      this.removed++;
    }
  }
}
