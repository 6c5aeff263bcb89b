import type { PlacementPlan, PlacementRequest, PlacementStrategy } from '@corral/domain';

// What a deploy needs from placement: the API of the scheduler's
// PlacementService (../placement/placement-service.ts), which it is given.
// A deploy takes the in-process path: the plan's placements stay reserved
// until each instance's workload row is written, then they are released
// (the row holds the resources from then on).

export interface PlacementOptions {
  strategy?: PlacementStrategy;
  /** One per request: what each placement's reservation is filed under until released. */
  reservationKeys: string[];
  /** Instances that already run, so a spread continues across them. */
  existing?: { hostId: string; group?: string }[];
}

export interface PlacementPort {
  place(requests: PlacementRequest[], options: PlacementOptions): Promise<PlacementPlan>;
  release(keys: string[]): void;
}

/** Service instances spread across hosts (per component) unless a strategy is asked for. */
export const SERVICE_PLACEMENT_STRATEGY: PlacementStrategy = 'spread';
