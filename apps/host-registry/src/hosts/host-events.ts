import { hostStatusToProto, instanceStateToProto, type HostStatus } from '@corral/domain';
import { Topics, type EventBus } from '@corral/events';
import type { Logger } from '@corral/logging';
import type { WorkloadStatus } from '@corral/proto';
import type { ReportedWorkload } from './host-lifecycle';

export interface HostStatusEvent {
  hostId: string;
  status: HostStatus;
  previous: HostStatus;
  reason: string;
  deleted?: boolean;
  epoch?: bigint;
  workloads?: WorkloadStatus[] | ReportedWorkload[];
  agentAddress?: string;
  at: Date;
}

/**
 * Publishes HostStatusChanged. Best effort (core NATS is at most once):
 * the event is a prompt for subscribers, the database row is the truth.
 */
export function publishHostStatus(bus: Pick<EventBus, 'publish'>, logger: Logger, e: HostStatusEvent): void {
  try {
    bus.publish(Topics.hostStatus, e.hostId, {
      hostId: e.hostId,
      status: hostStatusToProto(e.status),
      previousStatus: hostStatusToProto(e.previous),
      at: e.at,
      reason: e.reason,
      deleted: e.deleted ?? false,
      epoch: Number(e.epoch ?? 0n),
      agentAddress: e.agentAddress ?? '',
      workloads: (e.workloads ?? []).map((w) =>
        typeof w.state === 'string' && !w.state.startsWith('INSTANCE_STATE_')
          ? { workloadId: w.workloadId, state: instanceStateToProto((w as ReportedWorkload).state) }
          : (w as WorkloadStatus),
      ),
    });
  } catch (err) {
    logger.warn('could not publish a host status event', { hostId: e.hostId, err });
  }
}
