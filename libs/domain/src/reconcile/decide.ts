import type { HostStatus, InstanceState } from '../lifecycle/instance-state';
import { TERMINAL_STATES } from '../lifecycle/instance-state';
import type { ComponentRestartPolicy } from '../services/service-definition';

// The reconciler's brain (Nomad's reconciler is the model): a pure function
// from what Corral wants (its records), what the hosts report (runtime
// objects carrying Corral labels) and `now` to a plan of actions, each with
// the reason it is taken. Nothing here reads a clock or does I/O, so every
// decision is reproducible and property-tested.
//
// The mid-create race is closed by construction: a workload's record (the
// intent) is written before any provisioning call, and nothing younger than
// `intentGraceMs` — record or runtime — is ever reaped or failed.

/** What a workload record says Corral wants, as far as reconciling goes. */
export interface DesiredWorkload {
  workloadId: string;
  /** Host it was placed on; empty before placement. */
  hostId: string;
  state: InstanceState;
  /** When `state` was entered (the intent's age while pending/provisioning). */
  stateSince: Date;
  restart: { policy: ComponentRestartPolicy; maxAttempts: number; delaySeconds: number };
  /** Restarts done so far for this workload. */
  restarts: number;
  /** Exit code recorded when it stopped or failed. */
  exitCode?: number;
}

/** A runtime object a host reports (container, qemu process, process group). */
export interface ObservedRuntime {
  /** The Corral workload id from the object's labels. */
  workloadId: string;
  running: boolean;
  paused?: boolean;
  /** When the host first saw it (age guards the race with a record being written). */
  createdAt: Date;
  exitCode?: number;
}

export interface ObservedHost {
  hostId: string;
  status: HostStatus;
  /** When the runtime list below was taken, by the control plane's clock. */
  reportedAt: Date;
  runtimes: ObservedRuntime[];
}

export interface ReconcilePolicy {
  /** Nothing younger than this (record in pending/provisioning, or runtime) is reaped or failed. */
  intentGraceMs: number;
  /** A workload provisioning for longer than this is stuck. */
  provisioningTimeoutMs: number;
  /** A host report older than this says nothing about drift. */
  reportFreshnessMs: number;
  /** At most this many actions per decision; the rest wait for the next round. */
  maxActions: number;
}

export const DEFAULT_RECONCILE_POLICY: ReconcilePolicy = {
  intentGraceMs: 60_000,
  provisioningTimeoutMs: 5 * 60_000,
  reportFreshnessMs: 10_000,
  maxActions: 50,
};

export type ReconcileAction =
  /** A runtime object with Corral labels that no live record wants: destroy it. */
  | { kind: 'reap-orphan'; hostId: string; workloadId: string; reason: string }
  /** Provisioning never finished: mark failed (the executor also destroys whatever was started). */
  | { kind: 'fail-stuck'; workloadId: string; hostId: string; reason: string }
  /** Teardown was interrupted: run it again (destroy is idempotent). */
  | { kind: 'resume-teardown'; workloadId: string; hostId: string; reason: string }
  /** The record says it runs, its host reports it does not exist (or the host is unreachable): drift. */
  | { kind: 'mark-missing'; workloadId: string; hostId: string; reason: string }
  /** Missing, but the host reports it alive again: take the host's word. */
  | { kind: 'restore'; workloadId: string; hostId: string; state: 'running' | 'paused'; reason: string }
  /** Missing or exited, and its restart policy asks for it to run again on the same host. */
  | { kind: 'restart'; workloadId: string; hostId: string; attempt: number; reason: string }
  /** Its host is gone for good (down): start it elsewhere. */
  | { kind: 'replace'; workloadId: string; fromHostId: string; reason: string };

export interface ReconcilePlan {
  actions: ReconcileAction[];
  /** Actions that were due but left for a later round by `maxActions`. */
  deferred: number;
}

export interface ReconcileInput {
  desired: readonly DesiredWorkload[];
  observed: readonly ObservedHost[];
  now: Date;
  policy?: ReconcilePolicy;
}

const LIVE_STATES: ReadonlySet<InstanceState> = new Set(['running', 'paused']);
const INTENT_STATES: ReadonlySet<InstanceState> = new Set(['pending', 'provisioning']);

// Order in which due actions are kept when there are more than maxActions:
// freeing resources and fixing records first, starting things last.
const PRIORITY: Record<ReconcileAction['kind'], number> = {
  'resume-teardown': 0,
  'fail-stuck': 1,
  restore: 2,
  'mark-missing': 3,
  'reap-orphan': 4,
  restart: 5,
  replace: 6,
};

function wantsRestart(workload: DesiredWorkload, exitCode: number | undefined): boolean {
  if (workload.restarts >= workload.restart.maxAttempts) return false;
  if (workload.restart.policy === 'always') return true;
  if (workload.restart.policy === 'on-failure') return exitCode === undefined || exitCode !== 0;
  return false;
}

function age(since: Date, now: Date): number {
  return now.getTime() - since.getTime();
}

export function decide(input: ReconcileInput): ReconcilePlan {
  const policy = input.policy ?? DEFAULT_RECONCILE_POLICY;
  const { now } = input;
  const due: ReconcileAction[] = [];
  const byId = new Map(input.desired.map((workload) => [workload.workloadId, workload]));
  const hosts = new Map(input.observed.map((host) => [host.hostId, host]));
  const fresh = (host: ObservedHost | undefined): host is ObservedHost =>
    host !== undefined && host.status !== 'unreachable' && host.status !== 'down' && age(host.reportedAt, now) <= policy.reportFreshnessMs;

  // Runtime objects no record wants.
  for (const host of input.observed) {
    if (!fresh(host)) continue;
    for (const runtime of host.runtimes) {
      if (age(runtime.createdAt, now) < policy.intentGraceMs) continue;
      const record = byId.get(runtime.workloadId);
      let why: string | undefined;
      if (!record) why = 'no record of this workload';
      else if (record.hostId !== host.hostId) why = `its record places it on host ${record.hostId || '(none)'}`;
      else if (record.state === 'retired') why = 'its workload is retired';
      if (why) due.push({ kind: 'reap-orphan', hostId: host.hostId, workloadId: runtime.workloadId, reason: `runtime on ${host.hostId} carries Corral labels but ${why}` });
    }
  }

  for (const workload of input.desired) {
    const host = hosts.get(workload.hostId);
    const runtime = fresh(host) ? host.runtimes.find((r) => r.workloadId === workload.workloadId) : undefined;
    const stateAge = age(workload.stateSince, now);

    if (INTENT_STATES.has(workload.state)) {
      // An open intent: hands off inside the grace window, whatever anything reports.
      if (stateAge < Math.max(policy.intentGraceMs, policy.provisioningTimeoutMs)) continue;
      if (runtime?.running && workload.hostId) {
        due.push({ kind: 'restore', workloadId: workload.workloadId, hostId: workload.hostId, state: runtime.paused ? 'paused' : 'running', reason: `provisioning never reported back, but ${workload.hostId} runs it` });
      } else {
        due.push({ kind: 'fail-stuck', workloadId: workload.workloadId, hostId: workload.hostId, reason: `${workload.state} for ${Math.round(stateAge / 1000)} s (limit ${Math.round(policy.provisioningTimeoutMs / 1000)} s)` });
      }
      continue;
    }

    if (workload.state === 'tearing_down' || workload.state === 'stopping') {
      if (stateAge < policy.intentGraceMs) continue;
      // Resume once the host answers again, or at once when it is gone for good.
      const hostDown = host !== undefined && host.status === 'down';
      if (!hostDown && !fresh(host)) continue;
      due.push({ kind: 'resume-teardown', workloadId: workload.workloadId, hostId: workload.hostId, reason: `${workload.state} since ${Math.round(stateAge / 1000)} s: interrupted, resuming` });
      continue;
    }

    if (host?.status === 'down' && (LIVE_STATES.has(workload.state) || workload.state === 'missing')) {
      due.push({ kind: 'replace', workloadId: workload.workloadId, fromHostId: workload.hostId, reason: `host ${workload.hostId} is down` });
      continue;
    }

    if (host?.status === 'unreachable' && LIVE_STATES.has(workload.state)) {
      // The host went silent: its live workloads cannot be vouched for, so
      // they are missing (in case the scheduler's HostStatusChanged event was
      // lost). Never restarted or replaced on this alone: the host may come
      // back, and a fresh report that shows them alive restores them.
      if (stateAge >= policy.intentGraceMs) {
        due.push({ kind: 'mark-missing', workloadId: workload.workloadId, hostId: workload.hostId, reason: `host ${workload.hostId} is unreachable: its ${workload.state} workload cannot be confirmed` });
      }
      continue;
    }

    if (!fresh(host)) continue; // nothing trustworthy to compare with

    if (LIVE_STATES.has(workload.state)) {
      if (!runtime) {
        if (stateAge < policy.intentGraceMs) continue;
        due.push({ kind: 'mark-missing', workloadId: workload.workloadId, hostId: workload.hostId, reason: `${workload.hostId} reports no runtime for a ${workload.state} workload` });
      } else if (!runtime.running && wantsRestart(workload, runtime.exitCode)) {
        due.push(restart(workload, `exited${runtime.exitCode === undefined ? '' : ` with code ${runtime.exitCode}`} behind Corral's back`));
      }
      continue;
    }

    if (workload.state === 'missing') {
      if (runtime?.running) {
        due.push({ kind: 'restore', workloadId: workload.workloadId, hostId: workload.hostId, state: runtime.paused ? 'paused' : 'running', reason: `${workload.hostId} reports it alive again` });
      } else if (wantsRestart(workload, runtime?.exitCode)) {
        if (stateAge >= workload.restart.delaySeconds * 1000) due.push(restart(workload, 'vanished from its host'));
      }
      continue;
    }

    if (workload.state === 'failed' && workload.exitCode !== undefined && !runtime?.running) {
      // It ran and exited with a code (the agent's report got here first):
      // a crash behind Corral's back, for its restart policy to judge. A
      // failed start or a stuck intent has no exit code and stays failed.
      if (wantsRestart(workload, workload.exitCode) && stateAge >= workload.restart.delaySeconds * 1000) {
        due.push(restart(workload, `exited with code ${workload.exitCode} behind Corral's back`));
      }
      continue;
    }

    if (TERMINAL_STATES.has(workload.state) && runtime?.running && workload.state !== 'retired') {
      // Recorded as ended but still running: the stop never took effect.
      due.push({ kind: 'resume-teardown', workloadId: workload.workloadId, hostId: workload.hostId, reason: `recorded ${workload.state} but ${workload.hostId} still runs it` });
    }
  }

  const ordered = due
    .map((action, index) => ({ action, index }))
    .sort((a, b) => PRIORITY[a.action.kind] - PRIORITY[b.action.kind] || a.index - b.index)
    .map(({ action }) => action);
  const kept = ordered.slice(0, Math.max(0, policy.maxActions));
  return { actions: kept, deferred: ordered.length - kept.length };
}

function restart(workload: DesiredWorkload, why: string): ReconcileAction {
  const attempt = workload.restarts + 1;
  return {
    kind: 'restart',
    workloadId: workload.workloadId,
    hostId: workload.hostId,
    attempt,
    reason: `${why}; restart ${attempt} of ${workload.restart.maxAttempts} (policy ${workload.restart.policy})`,
  };
}
