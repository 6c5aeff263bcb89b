import { HostStatus as ProtoHostStatus, InstanceState as ProtoInstanceState } from '@corral/proto';

// The lifecycle every part of Corral shares (DESIGN.md §2). Stored in the
// database and shown over REST in this lowercase form; the proto enum is the
// wire form between services.
export const INSTANCE_STATES = [
  'pending',
  'provisioning',
  'running',
  'paused',
  'stopping',
  'stopped',
  'tearing_down',
  'retired',
  'missing',
  'failed',
] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

export const HOST_STATUSES = ['online', 'unreachable', 'draining', 'down'] as const;
export type HostStatus = (typeof HOST_STATUSES)[number];

/** States from which a workload never moves on by itself. */
export const TERMINAL_STATES: ReadonlySet<InstanceState> = new Set(['stopped', 'failed', 'retired']);

const allowed: Record<InstanceState, readonly InstanceState[]> = {
  pending: ['provisioning', 'stopping', 'stopped', 'failed'],
  provisioning: ['running', 'stopping', 'stopped', 'failed', 'missing'],
  running: ['paused', 'stopping', 'stopped', 'failed', 'missing'],
  paused: ['running', 'stopping', 'stopped', 'failed', 'missing'],
  stopping: ['stopped', 'failed', 'missing'],
  stopped: ['tearing_down', 'retired'],
  tearing_down: ['retired', 'failed'],
  retired: [],
  missing: ['running', 'paused', 'provisioning', 'stopping', 'stopped', 'failed'],
  failed: ['tearing_down', 'retired'],
};

export function canTransition(from: InstanceState, to: InstanceState): boolean {
  return from === to || allowed[from].includes(to);
}

/**
 * What a pause (towards `paused`) or a resume (towards `running`) asked of a
 * workload in `state` does: `act` moves it, `already` means it is there (the
 * request is idempotent), `refuse` means its state does not allow it (a
 * FailedPrecondition for the caller).
 */
export type PauseResumeAction = 'act' | 'already' | 'refuse';

export function pauseResumeAction(state: InstanceState, to: 'paused' | 'running'): PauseResumeAction {
  if (state === to) return 'already';
  return state === (to === 'paused' ? 'running' : 'paused') ? 'act' : 'refuse';
}

export function isInstanceState(value: string): value is InstanceState {
  return (INSTANCE_STATES as readonly string[]).includes(value);
}

export function instanceStateToProto(state: InstanceState): ProtoInstanceState {
  return `INSTANCE_STATE_${state.toUpperCase()}` as ProtoInstanceState;
}

export function instanceStateFromProto(state: ProtoInstanceState): InstanceState {
  const name = String(state).replace(/^INSTANCE_STATE_/, '').toLowerCase();
  if (!isInstanceState(name)) throw new RangeError(`unknown instance state ${state}`);
  return name;
}

export function hostStatusToProto(status: HostStatus): ProtoHostStatus {
  return `HOST_STATUS_${status.toUpperCase()}` as ProtoHostStatus;
}

export function hostStatusFromProto(status: ProtoHostStatus): HostStatus {
  const name = String(status).replace(/^HOST_STATUS_/, '').toLowerCase();
  if (!(HOST_STATUSES as readonly string[]).includes(name)) throw new RangeError(`unknown host status ${status}`);
  return name as HostStatus;
}
