import type { eventsV1 } from '@corral/proto';
import type { EventBus } from './event-bus';
import { Topics } from './topics';

/** An audit trail entry as stored (libs/db's StoredAuditEvent has this shape). */
export interface AuditEventFields {
  id: bigint;
  at: Date;
  actor: string;
  kind: string;
  action: string;
  outcome: string;
  subjectType: string;
  subjectId: string;
  teamId: string | null;
  reason: string;
  data: Record<string, unknown>;
  epoch: bigint;
}

export function auditEventMessage(event: AuditEventFields): eventsV1.AuditEventRecorded {
  return {
    id: Number(event.id),
    at: event.at,
    actor: event.actor,
    kind: event.kind,
    action: event.action,
    outcome: event.outcome,
    subjectType: event.subjectType,
    subjectId: event.subjectId,
    teamId: event.teamId ?? '',
    reason: event.reason,
    dataJson: JSON.stringify(event.data ?? {}),
    epoch: Number(event.epoch),
  };
}

/**
 * Publishes a stored audit entry on `corral.audit.<kind>`, and drift about a
 * workload also on `corral.drift.<workloadId>`. Core NATS is at most once:
 * the stored row is the record, the message only tells followers sooner.
 */
export function publishAuditEvent(bus: Pick<EventBus, 'publish'>, event: AuditEventFields): void {
  const message = auditEventMessage(event);
  bus.publish(Topics.audit, event.kind, message);
  if (event.kind === 'drift' && event.subjectType === 'workload') bus.publish(Topics.drift, event.subjectId, message);
}
