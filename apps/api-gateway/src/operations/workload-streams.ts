import { InternalError, InvalidArgumentError, UnavailableError, isCorralError, ResourceExhaustedError } from '@corral/domain';
import type { schedulerV1 } from '@corral/proto';
import { teamScopeOf } from './caller';
import type { OperationContext } from './corral-operations';
import { primed } from './primed';
import { progressEventsOf } from './progress-events';
import type { CorralPorts, WorkloadStreams } from './ports';

// Exec, files and snapshots in the public API (REST and gRPC alike): checked
// and team-scoped here, streamed through the scheduler. Every operation
// resolves only once the first answer is in (or the request is under way),
// so that "not found", "not running", "no such file" reach the client as an
// ordinary error status before any content does.

export const EXEC_LIMITS = { maxArgs: 4096, maxArgBytes: 128 * 1024, maxTerminal: 10_000 } as const;
export const FILE_PATH_MAX_LENGTH = 4096;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const WORKLOAD_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export interface ExecStartInput {
  command: string[];
  tty?: boolean;
  env?: Record<string, string>;
  workingDir?: string;
  columns?: number;
  rows?: number;
}

export type ExecInput = { type: 'stdin'; data: Buffer } | { type: 'eof' } | { type: 'resize'; columns: number; rows: number };
export type ExecOutput = { type: 'stdout' | 'stderr'; data: Buffer } | { type: 'exit'; exitCode: number };

export interface ExecChannel {
  send(input: ExecInput): Promise<void>;
  /** The command's output, then its exit last; throws what ended the exec otherwise. */
  output: AsyncIterable<ExecOutput>;
  /** Ends the exec (the client went away): cancels the upstream call, which kills the command. */
  close(): void;
}

export interface FileEntryView {
  name: string;
  kind: string;
  sizeBytes: number;
  mode: number;
  modifiedAt: string | null;
}

export interface SnapshotView {
  id: string;
  /** The workload it was taken of (restore it through that workload). */
  sourceWorkloadId: string;
  createdAt: string | null;
  /** Host storage it takes (allocated blocks). */
  sizeBytes: number;
  driver: string;
}

export type SnapshotEvent =
  | { type: 'progress'; status: string; transferredBytes: number; totalBytes: number; remainingBytes: number; elapsedMs: number }
  | { type: 'result'; snapshotId: string; bytes: number; durationMs: number };

export interface WorkloadStreamOperations {
  execWorkload(ctx: OperationContext, id: string, start: ExecStartInput): Promise<ExecChannel>;
  /** Streams `content` into the file; more than `maxBytes` is ResourceExhausted and the upload is cancelled. */
  writeWorkloadFile(ctx: OperationContext, id: string, path: string, content: AsyncIterable<Buffer>, options: { mode?: number; maxBytes: number }): Promise<{ bytes: number }>;
  readWorkloadFile(ctx: OperationContext, id: string, path: string): Promise<AsyncIterable<Buffer>>;
  listWorkloadDirectory(ctx: OperationContext, id: string, path: string): Promise<FileEntryView[]>;
  snapshotWorkload(ctx: OperationContext, id: string, options: { leavePaused?: boolean }): Promise<AsyncIterable<SnapshotEvent>>;
  /** A new workload started from snapshot `snapshotId` of workload `id`, on the snapshot's host. */
  restoreWorkload(ctx: OperationContext, id: string, snapshotId: string, options: { name?: string }): Promise<schedulerV1.Workload>;
  /** The snapshots of workload `id` on its host, oldest first. */
  listWorkloadSnapshots(ctx: OperationContext, id: string): Promise<SnapshotView[]>;
  /** Idempotent: false when there was nothing to delete. */
  deleteWorkloadSnapshot(ctx: OperationContext, id: string, snapshotId: string): Promise<{ deleted: boolean }>;
}

export const SNAPSHOT_ID = { pattern: '^snap-[0-9A-Za-z]+-[0-9a-f]+$', maxLength: 64 } as const;
const snapshotIdPattern = new RegExp(SNAPSHOT_ID.pattern);

function checkSnapshotId(snapshotId: string): string {
  if (typeof snapshotId !== 'string' || snapshotId.length > SNAPSHOT_ID.maxLength || !snapshotIdPattern.test(snapshotId)) {
    throw new InvalidArgumentError('snapshotId is malformed', { field: 'snapshotId' });
  }
  return snapshotId;
}

function checkPath(path: string): string {
  if (typeof path !== 'string' || path.length === 0) throw new InvalidArgumentError('path is required', { field: 'path' });
  if (path.length > FILE_PATH_MAX_LENGTH) throw new InvalidArgumentError(`path may have at most ${FILE_PATH_MAX_LENGTH} characters`, { field: 'path' });
  if (!path.startsWith('/')) throw new InvalidArgumentError('path must be absolute', { field: 'path' });
  if (path.includes('\0')) throw new InvalidArgumentError('path must not contain NUL', { field: 'path' });
  if (path.split('/').includes('..')) throw new InvalidArgumentError('path must not contain ".."', { field: 'path' });
  return path;
}

function checkExecStart(start: ExecStartInput): ExecStartInput {
  const { command } = start;
  if (!Array.isArray(command) || command.length === 0 || command[0] === '') throw new InvalidArgumentError('command is required', { field: 'command' });
  if (command.length > EXEC_LIMITS.maxArgs) throw new InvalidArgumentError(`command may have at most ${EXEC_LIMITS.maxArgs} arguments`, { field: 'command' });
  command.forEach((arg, i) => {
    if (typeof arg !== 'string' || arg.includes('\0') || Buffer.byteLength(arg) > EXEC_LIMITS.maxArgBytes) {
      throw new InvalidArgumentError(`command arguments must be strings without NUL of at most ${EXEC_LIMITS.maxArgBytes} bytes`, { field: `command[${i}]` });
    }
  });
  for (const [name, value] of Object.entries(start.env ?? {})) {
    if (!ENV_NAME.test(name)) throw new InvalidArgumentError('env names must match [A-Za-z_][A-Za-z0-9_]*', { field: `env.${name}` });
    if (value.includes('\0')) throw new InvalidArgumentError('env values must not contain NUL', { field: `env.${name}` });
  }
  if (start.workingDir !== undefined && start.workingDir !== '') checkPathField(start.workingDir, 'workingDir');
  for (const field of ['columns', 'rows'] as const) {
    const value = start[field];
    if (value !== undefined && (!Number.isInteger(value) || value < 0 || value > EXEC_LIMITS.maxTerminal)) {
      throw new InvalidArgumentError(`${field} must be an integer from 0 to ${EXEC_LIMITS.maxTerminal}`, { field });
    }
  }
  return start;
}

function checkPathField(path: string, field: string): void {
  try {
    checkPath(path);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new InvalidArgumentError(err.message.replace(/^path/, field), { field });
    throw err;
  }
}

export function createWorkloadStreamOperations(ports: CorralPorts, checkId: (id: string) => string): WorkloadStreamOperations {
  const streams = (): WorkloadStreams => {
    if (!ports.workloadStreams) throw new UnavailableError('exec, files and snapshots are not available');
    return ports.workloadStreams;
  };
  const opts = (ctx: OperationContext) => (ctx.signal ? { signal: ctx.signal } : {});
  /** Visible to this caller (or NotFound) before any stream opens. */
  const visible = async (ctx: OperationContext, id: string) => {
    const request = { id: checkId(id), teamId: teamScopeOf(ctx.caller) };
    await ports.scheduler.getWorkload(request, opts(ctx));
    return request;
  };

  return {
    async execWorkload(ctx, id, start) {
      const valid = checkExecStart(start);
      const { id: workloadId, teamId } = await visible(ctx, id);
      const gone = new AbortController();
      const signal = ctx.signal ? AbortSignal.any([ctx.signal, gone.signal]) : gone.signal;
      const call = streams().exec({ signal });
      await call.write({
        kind: {
          $case: 'start',
          value: {
            id: workloadId,
            teamId,
            command: valid.command,
            tty: valid.tty ?? false,
            env: valid.env ?? {},
            workingDir: valid.workingDir ?? '',
            size: valid.columns || valid.rows ? { columns: valid.columns ?? 0, rows: valid.rows ?? 0 } : undefined,
          },
        },
      });
      // The agent says `started` once the command runs; what fails before
      // (not running, no such driver capability) is thrown here.
      const responses = call.responses[Symbol.asyncIterator]();
      let first: IteratorResult<schedulerV1.ExecWorkloadResponse>;
      try {
        first = await responses.next();
      } catch (err) {
        gone.abort();
        throw err;
      }
      const output = (async function* (): AsyncGenerator<ExecOutput> {
        try {
          let next = first;
          while (!next.done) {
            const kind = next.value.kind;
            if (kind?.$case === 'stdout' || kind?.$case === 'stderr') yield { type: kind.$case, data: Buffer.from(kind.value) };
            else if (kind?.$case === 'exit') yield { type: 'exit', exitCode: kind.value.exitCode };
            next = await responses.next();
          }
        } finally {
          await responses.return?.();
        }
      })();
      return {
        async send(input) {
          if (input.type === 'stdin') await call.write({ kind: { $case: 'stdin', value: input.data } });
          else if (input.type === 'eof') await call.write({ kind: { $case: 'stdinEof', value: true } });
          else {
            checkExecStart({ command: ['-'], columns: input.columns, rows: input.rows });
            await call.write({ kind: { $case: 'resize', value: { columns: input.columns, rows: input.rows } } });
          }
        },
        output,
        close: () => gone.abort(),
      };
    },

    async writeWorkloadFile(ctx, id, path, content, options) {
      checkPath(path);
      const mode = options.mode ?? 0;
      if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new InvalidArgumentError('mode must be permission bits from 0 to 0o7777', { field: 'mode' });
      const { id: workloadId, teamId } = await visible(ctx, id);
      const gone = new AbortController();
      const signal = ctx.signal ? AbortSignal.any([ctx.signal, gone.signal]) : gone.signal;
      let tooLarge = false;
      const requests = (async function* (): AsyncGenerator<schedulerV1.WriteWorkloadFileRequest> {
        yield { kind: { $case: 'header', value: { id: workloadId, teamId, path, mode } } };
        let bytes = 0;
        for await (const chunk of content) {
          bytes += chunk.length;
          if (bytes > options.maxBytes) {
            tooLarge = true;
            gone.abort();
            throw new ResourceExhaustedError(`the file is larger than the limit of ${options.maxBytes} bytes`, { field: 'content' });
          }
          // gRPC messages stay well below the 4 MiB default cap.
          for (let i = 0; i < chunk.length; i += 64 * 1024) yield { kind: { $case: 'chunk', value: chunk.subarray(i, i + 64 * 1024) } };
        }
        yield { kind: { $case: 'eof', value: true } };
      })();
      try {
        const res = await streams().writeFile(requests, { signal });
        return { bytes: res.bytes };
      } catch (err) {
        if (tooLarge) throw new ResourceExhaustedError(`the file is larger than the limit of ${options.maxBytes} bytes`, { field: 'content' });
        if (isCorralError(err)) throw err;
        throw err;
      }
    },

    async readWorkloadFile(ctx, id, path) {
      checkPath(path);
      const request = { ...(await visible(ctx, id)), path };
      const chunks = streams().readFile(request, opts(ctx));
      return primed(
        (async function* () {
          for await (const message of chunks) yield Buffer.from(message.chunk);
        })(),
      );
    },

    async listWorkloadDirectory(ctx, id, path) {
      checkPath(path);
      const request = { ...(await visible(ctx, id)), path };
      const res = await streams().listDirectory(request, opts(ctx));
      return res.entries.map((e) => ({ name: e.name, kind: e.kind, sizeBytes: e.sizeBytes, mode: e.mode, modifiedAt: e.modifiedAt ? e.modifiedAt.toISOString() : null }));
    },

    async restoreWorkload(ctx, id, snapshotId, options) {
      if (typeof snapshotId !== 'string' || snapshotId.length > SNAPSHOT_ID.maxLength || !snapshotIdPattern.test(snapshotId)) {
        throw new InvalidArgumentError('snapshotId is malformed', { field: 'snapshotId' });
      }
      const name = options.name ?? '';
      if (name !== '' && !WORKLOAD_NAME.test(name)) throw new InvalidArgumentError('name must be lowercase letters, digits and dashes (at most 63)', { field: 'name' });
      const res = await ports.scheduler.restoreWorkload({ id: checkId(id), teamId: teamScopeOf(ctx.caller), snapshotId, name }, opts(ctx));
      if (!res.workload) throw new InternalError('backend answered without a workload');
      return res.workload;
    },

    async listWorkloadSnapshots(ctx, id) {
      const res = await streams().listSnapshots(await visible(ctx, id), opts(ctx));
      return res.snapshots.map((s) => ({
        id: s.snapshotId,
        sourceWorkloadId: s.sourceWorkloadId,
        createdAt: s.createdAt ? s.createdAt.toISOString() : null,
        sizeBytes: s.sizeBytes,
        driver: s.driver,
      }));
    },

    async deleteWorkloadSnapshot(ctx, id, snapshotId) {
      checkSnapshotId(snapshotId);
      const res = await streams().deleteSnapshot({ ...(await visible(ctx, id)), snapshotId }, opts(ctx));
      return { deleted: res.deleted };
    },

    async snapshotWorkload(ctx, id, options) {
      const request = { ...(await visible(ctx, id)), leavePaused: options.leavePaused ?? false };
      const events = streams().snapshot(request, opts(ctx));
      return primed<SnapshotEvent>(progressEventsOf(events));
    },
  };
}
