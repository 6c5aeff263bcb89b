import type { InstanceState, WorkloadVm, WorkloadResources, WorkloadRoute } from '@corral/domain';
import type { PortMapping, TaskHandle } from '../drivers/driver';

/** A workload as the agent is asked to run it (validated). */
export interface WorkloadSpec {
  workloadId: string;
  name: string;
  driver: string;
  command: string[];
  /** May hold tenants' secrets: persisted in private files, never logged or returned. */
  env: Record<string, string>;
  labels: Record<string, string>;
  image?: string;
  resources?: WorkloadResources;
  /** Absent in records written before routes existed: none. */
  routes?: WorkloadRoute[];
  vm?: WorkloadVm;
}

/**
 * What the agent knows about one workload, persisted as JSON in the state
 * dir after every change so a restarted agent can pick it up again.
 */
export interface WorkloadRecord {
  /** Layout version of this file, for future migrations. */
  version: 1;
  spec: WorkloadSpec;
  state: InstanceState;
  /**
   * Bumped on every state change and persisted before the change is
   * published, so it keeps increasing across agent restarts and consumers
   * can drop late or duplicate events by comparing it.
   */
  seq: number;
  exited: boolean;
  /** Known exit code; a signal death is 128 + signal number, as in shells. Absent when unknown. */
  exitCode?: number;
  reason?: string;
  handle?: TaskHandle;
  /**
   * Host ports held for the routes (the allocator's table is the authority;
   * this is what was given to the task). Emptied once it stopped for good.
   */
  ports?: PortMapping[];
  /**
   * The root disk the volume manager cloned for it (spec.vm.rootDisk), set
   * before the driver starts it; removed with it at teardown.
   */
  volume?: { path: string; format: string; baseImage: string };
  /** Set once a stop was asked for, so the exit that follows counts as `stopped`. */
  stopRequested: boolean;
  startedAt?: string;
  finishedAt?: string;
  updatedAt: string;
}

/** A workload as callers see it: no env, no driver internals. */
export interface WorkloadView {
  workloadId: string;
  name: string;
  driver: string;
  state: InstanceState;
  seq: number;
  exited: boolean;
  exitCode?: number;
  reason?: string;
  /** The driver's display id (e.g. a pid). */
  handle?: string;
  ports: PortMapping[];
  startedAt?: Date;
  finishedAt?: Date;
}

/**
 * exit_code on the wire when a workload exited but its code cannot be known
 * (no program exits with a negative code, so it cannot be mistaken for one).
 */
export const UNKNOWN_EXIT_CODE = -1;

/** Reason given to workloads the agent cannot find after its restart. */
export const LOST_REASON = 'lost';

export function viewOf(record: WorkloadRecord): WorkloadView {
  return {
    workloadId: record.spec.workloadId,
    name: record.spec.name,
    driver: record.spec.driver,
    state: record.state,
    seq: record.seq,
    exited: record.exited,
    exitCode: record.exitCode,
    reason: record.reason,
    handle: record.handle?.displayId,
    ports: (record.ports ?? []).map((p) => ({ ...p })),
    startedAt: record.startedAt ? new Date(record.startedAt) : undefined,
    finishedAt: record.finishedAt ? new Date(record.finishedAt) : undefined,
  };
}

/** The exit code as sent in events and RPC answers. */
export function wireExitCode(view: Pick<WorkloadView, 'exited' | 'exitCode'>): number {
  if (!view.exited) return 0;
  return view.exitCode ?? UNKNOWN_EXIT_CODE;
}
