import type { PromiseClient, StreamCallOpts } from '@corral/grpc';
import type { hostRegistryV1, schedulerV1 } from '@corral/proto';
import type { Caller } from './caller';

// What the operations need from the rest of Corral. In production these are
// gRPC clients of the scheduler and host-registry and the API key store; in
// tests, in-memory fakes.

export type WorkloadScheduler = Pick<
  PromiseClient<schedulerV1.SchedulerServiceClient>,
  'createWorkload' | 'getWorkload' | 'listWorkloads' | 'stopWorkload' | 'getWorkloadLogs' | 'pauseWorkload' | 'resumeWorkload'
> & {
  /** The scheduler's StreamWorkloadLogs; leaving the loop or aborting `opts.signal` cancels it. */
  stream(
    method: 'streamWorkloadLogs',
    request: schedulerV1.StreamWorkloadLogsRequest,
    opts?: StreamCallOpts,
  ): AsyncIterable<schedulerV1.StreamWorkloadLogsResponse>;
};

export type HostRegistry = Pick<PromiseClient<hostRegistryV1.HostRegistryServiceClient>, 'createRegistrationToken' | 'listHosts' | 'getHost'>;

/** Resolves a presented API key to its caller, or throws UnauthenticatedError. */
export type ApiKeyAuthenticator = (presentedKey: string) => Promise<Caller>;

export interface CorralPorts {
  scheduler: WorkloadScheduler;
  hostRegistry: HostRegistry;
  authenticate: ApiKeyAuthenticator;
}
