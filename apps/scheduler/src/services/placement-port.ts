import type { PlacementPlan, PlacementRequest, PlacementStrategy } from '@corral/domain';
import type { PlacementTransaction } from '../placement/allocation-ledger';

// What a deploy needs from placement: the API of the scheduler's
// PlacementService (../placement/placement-service.ts), which it is given.
// A deploy takes the durable path: a batch's workload rows are written in
// the transaction that holds the chosen hosts' locks (all of the batch or
// none), so deploys on different scheduler replicas never over-commit a
// host; the rows hold the resources from then on.

export interface PlacementOptions {
  strategy?: PlacementStrategy;
  /** One per request: what each placement's reservation is filed under until released. */
  reservationKeys: string[];
  /** Instances that already run, so a spread continues across them. */
  existing?: { hostId: string; group?: string }[];
  /** Writes the placed instances' rows under the hosts' locks. */
  commit?: (tx: PlacementTransaction, plan: PlacementPlan) => Promise<void>;
  /** With commit: write only when every request was placed. */
  allOrNothing?: boolean;
}

export interface PlacementPort {
  place(requests: PlacementRequest[], options: PlacementOptions): Promise<PlacementPlan>;
  release(keys: string[]): void;
}

/** Service instances spread across hosts (per component) unless a strategy is asked for. */
export const SERVICE_PLACEMENT_STRATEGY: PlacementStrategy = 'spread';
