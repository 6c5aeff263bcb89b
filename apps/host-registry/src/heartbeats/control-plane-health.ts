import type { BusStatus } from '@corral/events';

export type BrakeReason = 'bus-unhealthy' | 'database-unhealthy' | 'mass-silence';

/**
 * How healthy this replica's own connections are, and were recently. Silence
 * from hosts only means they are gone when we could have heard them: while
 * the bus is down heartbeats do not reach us, and while Postgres fails they
 * are not stored, so for `graceMs` after either recovers stored last-seen
 * times are not evidence (Kubernetes once evicted healthy nodes' VMs because
 * its database stalled).
 */
export class ControlPlaneHealth {
  private busUp: boolean;
  private busTroubleAt: number | undefined;
  private dbTroubleAt: number | undefined;
  private dbFailing = false;
  private stalled: () => boolean = () => false;

  constructor(
    private readonly graceMs: number,
    initialBus: BusStatus = 'connected',
    private readonly clock: () => number = Date.now,
  ) {
    this.busUp = initialBus === 'connected';
    if (!this.busUp) this.busTroubleAt = clock();
  }

  /** Feed of the bus's status listener. */
  busStatus(status: BusStatus): void {
    const up = status === 'connected';
    // The moment of recovery counts as trouble too: the grace runs from there.
    if (!up || !this.busUp) this.busTroubleAt = this.clock();
    this.busUp = up;
  }

  databaseFailed(): void {
    this.dbFailing = true;
    this.dbTroubleAt = this.clock();
  }

  databaseOk(): void {
    if (this.dbFailing) this.dbTroubleAt = this.clock();
    this.dbFailing = false;
  }

  /**
   * A probe that answers true while heartbeat storage is stalled (a write
   * running longer than a heartbeat interval): stored last-seen times then
   * lag behind what this replica has received, so silence is not evidence.
   */
  watchStorage(stalled: () => boolean): void {
    this.stalled = stalled;
  }

  get busConnected(): boolean {
    return this.busUp;
  }

  get databaseHealthy(): boolean {
    return !this.dbFailing;
  }

  /** Why hosts must not be marked down now; empty when they may. */
  reasons(): BrakeReason[] {
    const now = this.clock();
    const recent = (at: number | undefined) => at !== undefined && now - at < this.graceMs;
    const out: BrakeReason[] = [];
    if (!this.busUp || recent(this.busTroubleAt)) out.push('bus-unhealthy');
    if (this.stalled()) this.dbTroubleAt = now;
    if (this.dbFailing || recent(this.dbTroubleAt)) out.push('database-unhealthy');
    return out;
  }
}
