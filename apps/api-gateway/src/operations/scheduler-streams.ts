import { callClientStream, openBidiStream, type PromiseClient } from '@corral/grpc';
import type { schedulerV1 } from '@corral/proto';
import type { WorkloadStreams } from './ports';

/** WorkloadStreams over the scheduler's gRPC client. */
export function schedulerWorkloadStreams(client: PromiseClient<schedulerV1.SchedulerServiceClient>): WorkloadStreams {
  return {
    exec: (opts = {}) => openBidiStream((md, o) => client.raw.execWorkload(md, o), opts),
    writeFile: (requests, opts = {}) => callClientStream((md, o, cb) => client.raw.writeWorkloadFile(md, o, cb), requests, opts),
    readFile: (request, opts = {}) => client.stream('readWorkloadFile', request, opts),
    listDirectory: (request, opts = {}) => client.listWorkloadDirectory(request, opts.signal ? { signal: opts.signal } : {}),
    snapshot: (request, opts = {}) => client.stream('snapshotWorkload', request, opts),
    listSnapshots: (request, opts = {}) => client.listWorkloadSnapshots(request, opts.signal ? { signal: opts.signal } : {}),
    deleteSnapshot: (request, opts = {}) => client.deleteWorkloadSnapshot(request, opts.signal ? { signal: opts.signal } : {}),
  };
}
