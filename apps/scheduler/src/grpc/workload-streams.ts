import { FailedPreconditionError, InvalidArgumentError, isCorralError } from '@corral/domain';
import { callClientStream, implementBidiStream, implementClientStream, implementServerStream, implementUnary, openBidiStream } from '@corral/grpc';
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
          const first = await iterator.next();
          if (first.done || first.value.kind?.$case !== 'start') throw new InvalidArgumentError('the first message must be start', { field: 'start' });
          const start = first.value.kind.value;
          const agent = await workloads.agentOf(start.id, team(start.teamId), 'exec into');
          const upstream = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => agent.raw.exec(md, o), { signal: ctx.signal });
          await upstream.write({
            kind: {
              $case: 'start',
              value: { workloadId: start.id, command: start.command, tty: start.tty, env: start.env, workingDir: start.workingDir, size: start.size },
            },
          });
          void (async () => {
            try {
              for (;;) {
                const next = await iterator.next();
                if (next.done) break;
                const kind = next.value.kind;
                if (kind?.$case === 'stdin') await upstream.write({ kind: { $case: 'stdin', value: kind.value } });
                else if (kind?.$case === 'stdinEof') await upstream.write({ kind: { $case: 'stdinEof', value: true } });
                else if (kind?.$case === 'resize') await upstream.write({ kind: { $case: 'resize', value: kind.value } });
              }
              upstream.end();
            } catch {
              upstream.cancel();
            }
          })();
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
          const first = await iterator.next();
          if (first.done || first.value.kind?.$case !== 'header') throw new InvalidArgumentError('the first message must be the header', { field: 'header' });
          const header = first.value.kind.value;
          const agent = await workloads.agentOf(header.id, team(header.teamId), 'write files into');
          const upstream = (async function* (): AsyncGenerator<agentV1.WriteFileRequest> {
            yield { kind: { $case: 'header', value: { workloadId: header.id, path: header.path, mode: header.mode } } };
            for (;;) {
              const next = await iterator.next();
              // Ended without eof: cut short; throwing cancels the agent's call, so nothing is written.
              if (next.done) throw new InvalidArgumentError('the upload ended before eof', { field: 'eof' });
              const kind = next.value.kind;
              if (kind?.$case === 'eof') {
                yield { kind: { $case: 'eof', value: true } };
                return;
              }
              if (kind?.$case !== 'chunk') throw new InvalidArgumentError('only content chunks may follow the header', { field: 'chunk' });
              yield { kind: { $case: 'chunk', value: kind.value } };
            }
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
