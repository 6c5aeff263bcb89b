// NATS subjects used by Corral, defined once (DESIGN §2). Every subject is a
// fixed prefix, one variable token (the key: a host id or a workload id) and
// an optional fixed suffix. Building, subscribing (wildcard pattern) and
// parsing the key back out of a received subject all derive from the same
// template, so the three can never drift apart.

/** Thrown when an id cannot be used as a NATS subject token. */
export class InvalidSubjectTokenError extends Error {
  /** Stable machine-readable code, mapped to InvalidArgument by callers. */
  readonly code = 'INVALID_SUBJECT_TOKEN' as const;

  constructor(
    readonly token: string,
    readonly reason: string,
    readonly role = 'id',
  ) {
    super(`invalid ${role} ${JSON.stringify(token)} for a NATS subject: ${reason}`);
    this.name = 'InvalidSubjectTokenError';
  }
}

// `.` separates tokens and `*`/`>` are wildcards, so an id containing them
// would address other subjects (a host id of `*` would publish a heartbeat
// to every host's subject pattern). Whitespace and control characters end a
// protocol line or split its arguments on the wire.
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[.*>\s\u0000-\u001f\u007f]/u;

/**
 * Checks that `token` can stand as one subject token and returns it.
 * Throws InvalidSubjectTokenError otherwise.
 */
export function assertSubjectToken(token: string, role = 'id'): string {
  if (typeof token !== 'string') {
    throw new InvalidSubjectTokenError(String(token), 'not a string', role);
  }
  if (token.length === 0) {
    throw new InvalidSubjectTokenError(token, 'empty', role);
  }
  const m = FORBIDDEN.exec(token);
  if (m) {
    const ch = m[0];
    const what = ch === '.' ? "'.'" : ch === '*' ? "'*'" : ch === '>' ? "'>'" : 'whitespace or a control character';
    throw new InvalidSubjectTokenError(token, `contains ${what}`, role);
  }
  return token;
}

/**
 * Checks a queue group name. It travels as one protocol argument, so it
 * must be non-empty and free of whitespace; dots are allowed, as in NATS.
 */
export function assertQueueGroup(queue: string): string {
  // eslint-disable-next-line no-control-regex
  if (typeof queue !== 'string' || queue.length === 0 || /[\s\u0000-\u001f\u007f]/u.test(queue)) {
    throw new InvalidSubjectTokenError(String(queue), 'empty or contains whitespace', 'queue group');
  }
  return queue;
}

/** True when `token` can be used as a subject token. */
export function isValidSubjectToken(token: string): boolean {
  return typeof token === 'string' && token.length > 0 && !FORBIDDEN.test(token);
}

/** One family of subjects: `<prefix...>.<key>[.<suffix...>]`. */
export interface SubjectFamily {
  /** What the key is (for error messages), e.g. `hostId`. */
  readonly keyRole: string;
  /** Builds the subject for one key; throws InvalidSubjectTokenError. */
  subject(key: string): string;
  /** Wildcard pattern matching the subject of every key. */
  readonly pattern: string;
  /** Extracts the key from a concrete subject of this family, or undefined. */
  keyOf(subject: string): string | undefined;
}

function family(prefix: readonly string[], keyRole: string, suffix: readonly string[] = []): SubjectFamily {
  const keyIndex = prefix.length;
  const size = prefix.length + 1 + suffix.length;
  return {
    keyRole,
    subject: (key) => [...prefix, assertSubjectToken(key, keyRole), ...suffix].join('.'),
    pattern: [...prefix, '*', ...suffix].join('.'),
    keyOf(subject) {
      const tokens = subject.split('.');
      if (tokens.length !== size) return undefined;
      for (let i = 0; i < prefix.length; i++) if (tokens[i] !== prefix[i]) return undefined;
      for (let i = 0; i < suffix.length; i++) if (tokens[keyIndex + 1 + i] !== suffix[i]) return undefined;
      const key = tokens[keyIndex];
      return isValidSubjectToken(key) ? key : undefined;
    },
  };
}

/** Root token of every Corral subject. */
export const SUBJECT_ROOT = 'corral';

export const Subjects = {
  /** `corral.hosts.<hostId>.heartbeat` — HostHeartbeat from a node agent. */
  hostHeartbeat: family([SUBJECT_ROOT, 'hosts'], 'hostId', ['heartbeat']),
  /** `corral.hosts.<hostId>.events` — host lifecycle events from host-registry. */
  hostEvents: family([SUBJECT_ROOT, 'hosts'], 'hostId', ['events']),
  /** `corral.hosts.<hostId>.notices` — notices to one host's agent (CredentialRefused). */
  hostNotices: family([SUBJECT_ROOT, 'hosts'], 'hostId', ['notices']),
  /** `corral.workloads.<workloadId>.state` — WorkloadStateChanged from a node agent. */
  workloadState: family([SUBJECT_ROOT, 'workloads'], 'workloadId', ['state']),
  /** `corral.drift.<workloadId>` — drift findings from the reconciler. */
  drift: family([SUBJECT_ROOT, 'drift'], 'workloadId'),
  /** `corral.fleet.<replicaId>.alarm` — FleetAlarm from host-registry's monitor. */
  fleetAlarm: family([SUBJECT_ROOT, 'fleet'], 'replicaId', ['alarm']),
  /** `corral.audit.<kind>` — AuditEventRecorded: the audit trail (drift, action, lifecycle...). */
  audit: family([SUBJECT_ROOT, 'audit'], 'kind'),
} as const;

export const hostHeartbeatSubject = (hostId: string): string => Subjects.hostHeartbeat.subject(hostId);
export const hostEventsSubject = (hostId: string): string => Subjects.hostEvents.subject(hostId);
export const workloadStateSubject = (workloadId: string): string => Subjects.workloadState.subject(workloadId);
export const driftSubject = (workloadId: string): string => Subjects.drift.subject(workloadId);
export const fleetAlarmSubject = (replicaId: string): string => Subjects.fleetAlarm.subject(replicaId);
export const auditSubject = (kind: string): string => Subjects.audit.subject(kind);

/** Wildcard patterns to subscribe to every key of a family. */
export const SubjectPatterns = {
  hostHeartbeat: Subjects.hostHeartbeat.pattern, // corral.hosts.*.heartbeat
  hostEvents: Subjects.hostEvents.pattern, // corral.hosts.*.events
  hostNotices: Subjects.hostNotices.pattern, // corral.hosts.*.notices
  workloadState: Subjects.workloadState.pattern, // corral.workloads.*.state
  drift: Subjects.drift.pattern, // corral.drift.*
  fleetAlarm: Subjects.fleetAlarm.pattern, // corral.fleet.*.alarm
  audit: Subjects.audit.pattern, // corral.audit.*
  all: `${SUBJECT_ROOT}.>`,
} as const;
