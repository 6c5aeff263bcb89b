import { instanceStateFromProto, isCorralError } from '@corral/domain';
import { Topics, type CredentialRefusalNotifier, type EventBus, type EventSubscription } from '@corral/events';
import type { Logger } from '@corral/logging';
import type { WorkloadService } from '../workloads/workload-service';
import type { WorkloadStore } from '../workloads/workload-store';
import type { WorkloadStateAuthenticator } from './workload-state-authenticator';

/** The host a workload is recorded on, for the authenticator; undefined for an unknown one or one on no host. */
export function recordedHostOf(store: Pick<WorkloadStore, 'get'>): (workloadId: string) => Promise<string | undefined> {
  return async (workloadId) => {
    try {
      return (await store.get(workloadId, null)).hostId ?? undefined;
    } catch (err) {
      if (isCorralError(err) && err.code === 'NOT_FOUND') return undefined;
      throw err;
    }
  };
}

/** Whether host-registry knows the host (GetHost answers; a deleted one is not found): only its agent is told of refusals. */
export function knownHostVia(hosts: { get(hostId: string): Promise<unknown> }): (hostId: string) => Promise<boolean> {
  return async (hostId) => {
    try {
      await hosts.get(hostId);
      return true;
    } catch (err) {
      if (isCorralError(err) && err.code === 'NOT_FOUND') return false;
      throw err;
    }
  };
}

/**
 * Applies agents' WorkloadStateChanged events (one replica each, queue
 * group `scheduler`). With an authenticator an event is applied only when
 * it carries its host's valid JWT and that host is the workload's; without
 * one (SCHEDULER_REQUIRE_HOST_TOKEN=false) every event is applied.
 */
export function applyWorkloadStateEvents(options: {
  bus: Pick<EventBus, 'subscribe'>;
  workloads: Pick<WorkloadService, 'applyEvent'>;
  authenticator: WorkloadStateAuthenticator | undefined;
  /** Tells a host's agent when its event was refused for its token, so it refreshes at once. */
  refusalNotices?: Pick<CredentialRefusalNotifier, 'refused'>;
  logger: Logger;
  /** Queue group shared by the replicas (default `scheduler`); tests on a shared server use their own. */
  queue?: string;
}): EventSubscription {
  const { bus, workloads, authenticator, logger } = options;
  return bus.subscribe(
    Topics.workloadState,
    async (event) => {
      if (authenticator) {
        // A check that could not run (host-registry or the database down)
        // drops the event: the agent's heartbeats and responses carry the
        // state again.
        const verdict = await authenticator.check(event).catch((err: unknown) => {
          logger.warn('workload state event dropped: its host token could not be checked', { workloadId: event.workloadId, hostId: event.hostId, err });
          return 'unchecked' as const;
        });
        if (verdict === 'token-refused') void options.refusalNotices?.refused(event.hostId, 'workload-state');
        if (verdict !== 'accepted') return;
      }
      const applied = await workloads.applyEvent(event.workloadId, {
        seq: event.seq,
        state: instanceStateFromProto(event.state),
        exited: event.exited,
        exitCode: event.exitCode,
        reason: event.reason,
        // The ports of this seq: applied with its state, so an RPC answer
        // overtaken by a newer event loses nothing.
        ...(event.portsReported ? { ports: event.ports.map((p) => ({ name: p.name, guestPort: p.guestPort, hostPort: p.hostPort, protocol: p.protocol })) } : {}),
      });
      logger.debug('workload state event', { workloadId: event.workloadId, seq: event.seq, state: event.state, applied });
    },
    { queue: options.queue ?? 'scheduler' },
  );
}
