import type { BidiCall, PromiseClient, StreamCallOpts } from '@corral/grpc';
import type { hostRegistryV1, schedulerV1 } from '@corral/proto';
import type { Caller } from './caller';

// What the operations need from the rest of Corral. In production these are
// gRPC clients of the scheduler and host-registry and the API key store; in
// tests, in-memory fakes.

export type WorkloadScheduler = Pick<
  PromiseClient<schedulerV1.SchedulerServiceClient>,
  'createWorkload' | 'getWorkload' | 'listWorkloads' | 'stopWorkload' | 'getWorkloadLogs' | 'pauseWorkload' | 'resumeWorkload' | 'restoreWorkload' | 'destroyWorkload'
  // drain that moves workloads away (operations/fleet-operations.ts)
  | 'migrateHostWorkloads'
> & {
  /** The scheduler's StreamWorkloadLogs; leaving the loop or aborting `opts.signal` cancels it. */
  stream(
    method: 'streamWorkloadLogs',
    request: schedulerV1.StreamWorkloadLogsRequest,
    opts?: StreamCallOpts,
  ): AsyncIterable<schedulerV1.StreamWorkloadLogsResponse>;
};

export type HostRegistry = Pick<
  PromiseClient<hostRegistryV1.HostRegistryServiceClient>,
  | 'createRegistrationToken'
  | 'listHosts'
  | 'getHost'
  // fleet membership (operations/fleet-operations.ts)
  | 'drainHost'
  | 'undrainHost'
  | 'deleteHost'
  | 'getFleetHealth'
  | 'listRegistrationTokens'
  | 'revokeRegistrationToken'
>;

/** Resolves a presented API key to its caller, or throws UnauthenticatedError. */
export type ApiKeyAuthenticator = (presentedKey: string) => Promise<Caller>;

/**
 * The scheduler's exec, file and snapshot calls (streams in both
 * directions). Ending an iteration or aborting `opts.signal` cancels the
 * call upstream.
 */
export interface WorkloadStreams {
  exec(opts?: StreamCallOpts): BidiCall<schedulerV1.ExecWorkloadRequest, schedulerV1.ExecWorkloadResponse>;
  writeFile(requests: AsyncIterable<schedulerV1.WriteWorkloadFileRequest>, opts?: StreamCallOpts): Promise<schedulerV1.WriteWorkloadFileResponse>;
  readFile(request: schedulerV1.ReadWorkloadFileRequest, opts?: StreamCallOpts): AsyncIterable<schedulerV1.ReadWorkloadFileResponse>;
  listDirectory(request: schedulerV1.ListWorkloadDirectoryRequest, opts?: StreamCallOpts): Promise<schedulerV1.ListWorkloadDirectoryResponse>;
  snapshot(request: schedulerV1.SnapshotWorkloadRequest, opts?: StreamCallOpts): AsyncIterable<schedulerV1.SnapshotWorkloadResponse>;
  listSnapshots(request: schedulerV1.ListWorkloadSnapshotsRequest, opts?: StreamCallOpts): Promise<schedulerV1.ListWorkloadSnapshotsResponse>;
  deleteSnapshot(request: schedulerV1.DeleteWorkloadSnapshotRequest, opts?: StreamCallOpts): Promise<schedulerV1.DeleteWorkloadSnapshotResponse>;
}

export interface CorralPorts {
  scheduler: WorkloadScheduler;
  /** Absent: exec, files and snapshots answer UNAVAILABLE. */
  workloadStreams?: WorkloadStreams;
  hostRegistry: HostRegistry;
  authenticate: ApiKeyAuthenticator;
}
