// The topics Corral publishes: each subject family with its protobuf payload.

import { HostHeartbeat, WorkloadStateChanged, eventsV1 } from '@corral/proto';
import type { Codec, Topic } from './event-bus';
import { Subjects, type SubjectFamily } from './subjects';

/** The shape of a ts-proto generated message's functions that we need. */
export interface ProtoMessageFns<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
}

/** A codec over a ts-proto message (protobuf binary encoding). */
export function protoCodec<T>(fns: ProtoMessageFns<T>): Codec<T> {
  return {
    encode: (message) => fns.encode(message).finish(),
    decode: (data) => fns.decode(data),
  };
}

export function defineTopic<T>(
  name: string,
  subjects: SubjectFamily,
  codec: Codec<T>,
  keyOf?: (message: T) => string,
): Topic<T> {
  return Object.freeze({ name, subjects, codec, ...(keyOf ? { keyOf } : {}) });
}

// Topics exist only for subjects whose payload has a protobuf message in
// proto/corral/events/v1; add a topic here with defineTopic once the
// message is defined.
export const Topics = {
  /** `corral.hosts.<hostId>.heartbeat`, key = hostId. */
  hostHeartbeat: defineTopic<HostHeartbeat>(
    'hostHeartbeat',
    Subjects.hostHeartbeat,
    protoCodec(HostHeartbeat),
    (m) => m.hostId,
  ),
  /** `corral.workloads.<workloadId>.state`, key = workloadId. */
  workloadState: defineTopic<WorkloadStateChanged>(
    'workloadState',
    Subjects.workloadState,
    protoCodec(WorkloadStateChanged),
    (m) => m.workloadId,
  ),
  /** `corral.hosts.<hostId>.events`, key = hostId: host status changes from host-registry. */
  hostStatus: defineTopic<eventsV1.HostStatusChanged>(
    'hostStatus',
    Subjects.hostEvents,
    protoCodec(eventsV1.HostStatusChanged),
    (m) => m.hostId,
  ),
  /** `corral.hosts.<hostId>.notices`, key = hostId: a message of that host was refused for its token; its agent refreshes. */
  credentialRefused: defineTopic<eventsV1.CredentialRefused>(
    'credentialRefused',
    Subjects.hostNotices,
    protoCodec(eventsV1.CredentialRefused),
    (m) => m.hostId,
  ),
  /** `corral.fleet.<replicaId>.alarm`, key = replicaId: the monitor's brake engaging or releasing. */
  fleetAlarm: defineTopic<eventsV1.FleetAlarm>(
    'fleetAlarm',
    Subjects.fleetAlarm,
    protoCodec(eventsV1.FleetAlarm),
    (m) => m.replicaId,
  ),
  /** `corral.audit.<kind>`, key = kind: every audit trail entry once it is stored. */
  audit: defineTopic<eventsV1.AuditEventRecorded>(
    'audit',
    Subjects.audit,
    protoCodec(eventsV1.AuditEventRecorded),
    (m) => m.kind,
  ),
  /** `corral.drift.<workloadId>`, key = workloadId: the reconciler's drift findings about a workload. */
  drift: defineTopic<eventsV1.AuditEventRecorded>(
    'drift',
    Subjects.drift,
    protoCodec(eventsV1.AuditEventRecorded),
    (m) => m.subjectId,
  ),
} as const;
