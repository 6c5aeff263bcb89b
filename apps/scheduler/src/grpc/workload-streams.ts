import { FailedPreconditionError, InvalidArgumentError, isCorralError } from '@corral/domain';
import {
  callClientStream,
  firstMessageOf,
  forwardRequests,
  implementBidiStream,
  implementClientStream,
  implementServerStream,
  implementUnary,
  openBidiStream,
  uploadedChunks,
} from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { schedulerV1, type agentV1 } from '@corral/proto';
import type { WorkloadService } from '../workloads/workload-service';

// Exec, files and snapshots: looked up and team-checked here, then proxied
// to the workload's host agent message by message. Every upstream call
// carries the downstream call's signal, so a caller that goes away cancels
// the agent's call (and so the command, the read, the upload).

const team = (teamId: string) => teamId || null;

/** The workload is ours but unknown to its host: that is its state, not a missing resource. */
function hostLost(err: unknown, id: string, what: string): unknown {
  if (isCorralError(err) && err.code === 'NOT_FOUND' && !err.field?.startsWith('path')) {
    return new FailedPreconditionError(`cannot ${what} workload ${id}: unknown to its host`, { cause: err });
  }
  return err;
}

export function workloadStreamHandlers(workloads: WorkloadService, logger: Logger) {
  const definition = schedulerV1.SchedulerServiceService;
  return {
    ...implementBidiStream(
      definition,
      {
        async *execWorkload(requests, ctx) {
          const iterator = requests[Symbol.asyncIterator]();
          const start = await firstMessageOf(iterator, 'start', 'start');
          const agent = await workloads.agentOf(start.id, team(start.teamId), 'exec into');
          const upstream = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => agent.raw.exec(md, o), { signal: ctx.signal });
          await upstream.write({
            kind: {
              $case: 'start',
              value: { workloadId: start.id, command: start.command, tty: start.tty, env: start.env, workingDir: start.workingDir, size: start.size },
            },
          });
          // Input goes up as the agent's call accepts it; output comes down as the caller reads it
          // (upstream.responses pauses the agent's call while this handler's call pushes back).
          void forwardRequests(
            iterator,
            async ({ kind }) => {
              if (kind?.$case === 'stdin') await upstream.write({ kind: { $case: 'stdin', value: kind.value } });
              else if (kind?.$case === 'stdinEof') await upstream.write({ kind: { $case: 'stdinEof', value: true } });
              else if (kind?.$case === 'resize') await upstream.write({ kind: { $case: 'resize', value: kind.value } });
            },
            { end: () => upstream.end(), error: () => upstream.cancel() },
          );
          try {
            for await (const message of upstream.responses) {
              if (message.kind) yield { kind: message.kind };
            }
          } catch (err) {
            throw hostLost(err, start.id, 'exec into');
          }
        },
      },
      logger,
    ),
    ...implementClientStream(
      definition,
      {
        async writeWorkloadFile(requests, ctx) {
          const iterator = requests[Symbol.asyncIterator]();
          const header = await firstMessageOf(iterator, 'header', 'the header');
          const agent = await workloads.agentOf(header.id, team(header.teamId), 'write files into');
          const upstream = (async function* (): AsyncGenerator<agentV1.WriteFileRequest> {
            yield { kind: { $case: 'header', value: { workloadId: header.id, path: header.path, mode: header.mode } } };
            // Cut short (no eof): uploadedChunks throws, which cancels the agent's call, so nothing is written.
            for await (const chunk of uploadedChunks(iterator)) yield { kind: { $case: 'chunk', value: chunk } };
            yield { kind: { $case: 'eof', value: true } };
          })();
          try {
            const res = await callClientStream<agentV1.WriteFileRequest, agentV1.WriteFileResponse>((md, o, cb) => agent.raw.writeFile(md, o, cb), upstream, {
              signal: ctx.signal,
            });
            return { bytes: res.bytes };
          } catch (err) {
            throw hostLost(err, header.id, 'write files into');
          }
        },
      },
      logger,
    ),
    ...implementServerStream(
      definition,
      {
        async *readWorkloadFile(req, ctx) {
          const agent = await workloads.agentOf(req.id, team(req.teamId), 'read files of');
          try {
            for await (const message of agent.stream('readFile', { workloadId: req.id, path: req.path }, { signal: ctx.signal })) yield { chunk: message.chunk };
          } catch (err) {
            throw hostLost(err, req.id, 'read files of');
          }
        },
        async *snapshotWorkload(req, ctx) {
          const agent = await workloads.agentOf(req.id, team(req.teamId), 'snapshot');
          try {
            for await (const message of agent.stream('snapshotWorkload', { workloadId: req.id, leavePaused: req.leavePaused }, { signal: ctx.signal })) {
              if (message.kind) yield { kind: message.kind };
            }
          } catch (err) {
            throw hostLost(err, req.id, 'snapshot');
          }
        },
      },
      logger,
    ),
    ...snapshotListHandlers(workloads, logger),
    ...implementUnary(
      definition,
      {
        async listWorkloadDirectory(req, ctx) {
          const agent = await workloads.agentOf(req.id, team(req.teamId), 'list files of');
          try {
            return await agent.listDirectory({ workloadId: req.id, path: req.path }, { signal: ctx.signal });
          } catch (err) {
            throw hostLost(err, req.id, 'list files of');
          }
        },
      },
      logger,
    ),
  };
}

/**
 * Listing and deleting a workload's snapshots: the same team rules as
 * taking one, but a finished workload's are reachable too (they stay on its
 * host until teardown), and a workload that never had a host has none.
 */
function snapshotListHandlers(workloads: WorkloadService, logger: Logger) {
  return implementUnary(
    schedulerV1.SchedulerServiceService,
    {
      async listWorkloadSnapshots(req, ctx) {
        const agent = await workloads.snapshotHostOf(req.id, team(req.teamId));
        if (!agent) return { snapshots: [] };
        const res = await agent.listSnapshots({ workloadId: req.id }, { signal: ctx.signal });
        return { snapshots: res.snapshots };
      },
      async deleteWorkloadSnapshot(req, ctx) {
        if (!req.snapshotId) throw new InvalidArgumentError('snapshotId is required', { field: 'snapshotId' });
        const agent = await workloads.snapshotHostOf(req.id, team(req.teamId));
        if (!agent) return { deleted: false };
        const res = await agent.deleteSnapshot({ workloadId: req.id, snapshotId: req.snapshotId }, { signal: ctx.signal });
        return { deleted: res.deleted };
      },
    },
    logger,
  );
}
