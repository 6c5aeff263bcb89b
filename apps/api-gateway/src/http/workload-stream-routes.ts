import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isCorralError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { Caller } from '../operations/caller';
import type { CorralOperations, OperationContext } from '../operations/corral-operations';
import type { ExecChannel } from '../operations/workload-streams';
import { httpErrorFor } from './http-errors';
import { responseGone, sendNdjson } from './ndjson-responses';
import { workloadView } from './views';
import { EXEC_CHANNELS, workloadStreamSchemas } from './workload-stream-schemas';

// REST routes of exec (WebSocket), files (streamed bodies) and snapshots
// (NDJSON progress), over the shared operations. Everything that can fail
// before content flows fails as an ordinary HTTP error (through the one
// error switch); afterwards the stream itself says so.

export interface WorkloadStreamRouteOptions {
  operations: CorralOperations;
  logger: Logger;
  fileMaxBytes: number;
  callerOf(request: FastifyRequest): OperationContext;
}

/** The part of a `ws` WebSocket this uses (its types are not installed). */
export interface WebSocket {
  on(event: 'message', listener: (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => void): void;
  once(event: 'close', listener: () => void): void;
  /** `written` runs once the frame has been written out to the connection (with an error if it never will be). */
  send(data: Buffer, written?: (err?: Error) => void): void;
  close(code?: number, reason?: string): void;
  /** Stops and restarts reading frames from the connection. */
  pause(): void;
  resume(): void;
}

/** Most exec output a WebSocket may hold unsent; past it the upstream is not read until it drains (so the command waits). */
export const EXEC_SOCKET_BUFFER_BYTES = 1024 * 1024;
/** Stdin frames handed upstream and not yet accepted before the socket stops reading the client. */
const EXEC_STDIN_PENDING_FRAMES = 8;

/**
 * The bytes handed to a WebSocket that are not yet written out to its
 * connection (ws calls a send's callback once they are). A client that reads
 * slowly keeps them from going down; `room()` waits until they are back
 * under the bound, and whoever awaits it stops reading upstream meanwhile.
 */
export class SocketSendWindow {
  private unsentBytes = 0;
  private waiting: (() => void)[] = [];

  constructor(
    private readonly socket: Pick<WebSocket, 'send'>,
    private readonly maxUnsentBytes = EXEC_SOCKET_BUFFER_BYTES,
  ) {}

  send(data: Buffer): void {
    this.unsentBytes += data.length;
    this.socket.send(data, () => {
      this.unsentBytes -= data.length;
      if (this.unsentBytes <= this.maxUnsentBytes) this.release();
    });
  }

  room(): Promise<void> {
    if (this.unsentBytes <= this.maxUnsentBytes) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Lets every waiter go (also when the socket has closed: the output loop then finds the channel closed). */
  release(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve();
  }
}

interface IdParams {
  id: string;
}

interface ExecQuery {
  command: string[];
  tty?: boolean;
  env?: string[];
  workingDir?: string;
  columns?: number;
  rows?: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    execChannel?: ExecChannel;
  }
}

/** What a too-large upload is answered with: the framework's own 413 entry in the one error switch. */
function payloadTooLarge(): Error {
  return Object.assign(new Error('payload too large'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 });
}

export async function registerWorkloadStreamRoutes(api: FastifyInstance, options: WorkloadStreamRouteOptions): Promise<void> {
  const { operations, logger, callerOf } = options;

  // --- exec ---------------------------------------------------------------------
  api.route<{ Params: IdParams; Querystring: ExecQuery }>({
    method: 'GET',
    url: '/v1/workloads/:id/exec',
    schema: workloadStreamSchemas.execWorkload,
    // A single `command=ls` arrives as a string; arrays are what the schema checks.
    preValidation: async (request) => {
      const query = request.query as unknown as Record<string, unknown>;
      for (const key of ['command', 'env']) if (typeof query[key] === 'string') query[key] = [query[key]];
    },
    // Started before the upgrade, so "not found" or "not running" is an HTTP status.
    preHandler: async (request) => {
      if (!request.ws) return;
      const q = request.query;
      const env = Object.fromEntries((q.env ?? []).map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
      const caller: Caller = callerOf(request).caller;
      // Its lifetime is the socket's: closing the socket closes the channel.
      request.execChannel = await operations.execWorkload({ caller }, request.params.id, {
        command: q.command,
        tty: q.tty ?? false,
        env,
        workingDir: q.workingDir,
        columns: q.columns,
        rows: q.rows,
      });
    },
    handler: async (_request, reply: FastifyReply) =>
      reply.code(426).header('upgrade', 'websocket').send({ error: 'upgrade_required', message: 'connect with a WebSocket client' }),
    wsHandler: (socket: WebSocket, request: FastifyRequest) => {
      const channel = request.execChannel;
      if (!channel) {
        socket.close(1011);
        return;
      }
      pumpExec(socket, channel, logger, request.id);
    },
  });

  // --- files --------------------------------------------------------------------
  await api.register(async (files) => {
    // The body is the file: streamed through as it arrives, whatever its type.
    files.removeAllContentTypeParsers();
    files.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

    files.put<{ Params: IdParams; Querystring: { path: string; mode?: string } }>(
      '/v1/workloads/:id/files',
      {
        schema: workloadStreamSchemas.putWorkloadFile,
        bodyLimit: Number.MAX_SAFE_INTEGER,
        // A large file takes longer to arrive than an ordinary request may (request-timeouts.ts).
        config: { longRequest: 'upload' },
        preValidation: async (request) => {
          const length = Number(request.headers['content-length']);
          if (Number.isFinite(length) && length > options.fileMaxBytes) throw payloadTooLarge();
        },
      },
      async (request, reply) => {
        const body = (request.body ?? request.raw) as AsyncIterable<Buffer>;
        const mode = request.query.mode === undefined ? undefined : parseInt(request.query.mode, 8);
        try {
          const written = await operations.writeWorkloadFile({ ...callerOf(request), signal: responseGone(reply) }, request.params.id, request.query.path, body, {
            mode,
            maxBytes: options.fileMaxBytes,
          });
          return { path: request.query.path, bytes: written.bytes };
        } catch (err) {
          if (isCorralError(err) && err.code === 'RESOURCE_EXHAUSTED' && err.field === 'content') throw payloadTooLarge();
          throw err;
        }
      },
    );
  });

  api.get<{ Params: IdParams; Querystring: { path: string; list?: boolean } }>(
    '/v1/workloads/:id/files',
    { schema: workloadStreamSchemas.getWorkloadFile },
    async (request, reply) => {
      const ctx = { ...callerOf(request), signal: responseGone(reply) };
      if (request.query.list) {
        const entries = await operations.listWorkloadDirectory(ctx, request.params.id, request.query.path);
        return reply.type('application/json; charset=utf-8').send({ path: request.query.path, entries });
      }
      const chunks = await operations.readWorkloadFile(ctx, request.params.id, request.query.path);
      return reply
        .type('application/octet-stream')
        .header('cache-control', 'no-store')
        .send(streamOf(chunks, (err) => logger.error('file stream failed', { reqId: request.id, err })));
    },
  );

  // --- snapshots ----------------------------------------------------------------
  api.post<{ Params: IdParams & { snapshotId: string }; Body: { name?: string } | null | undefined }>(
    '/v1/workloads/:id/snapshots/:snapshotId/restore',
    { schema: workloadStreamSchemas.restoreWorkload },
    async (request, reply) => {
      const workload = await operations.restoreWorkload(callerOf(request), request.params.id, request.params.snapshotId, { name: request.body?.name });
      return reply.code(201).header('location', `/v1/workloads/${encodeURIComponent(workload.id)}`).send(workloadView(workload));
    },
  );

  api.get<{ Params: IdParams }>('/v1/workloads/:id/snapshots', { schema: workloadStreamSchemas.listWorkloadSnapshots }, async (request) => {
    return { snapshots: await operations.listWorkloadSnapshots(callerOf(request), request.params.id) };
  });

  api.delete<{ Params: IdParams & { snapshotId: string } }>(
    '/v1/workloads/:id/snapshots/:snapshotId',
    { schema: workloadStreamSchemas.deleteWorkloadSnapshot },
    async (request, reply) => {
      // Idempotent: a snapshot already gone answers the same.
      await operations.deleteWorkloadSnapshot(callerOf(request), request.params.id, request.params.snapshotId);
      return reply.code(204).send();
    },
  );

  api.post<{ Params: IdParams; Body: { leavePaused?: boolean } | null | undefined }>(
    '/v1/workloads/:id/snapshots',
    { schema: workloadStreamSchemas.snapshotWorkload },
    async (request, reply) => {
      const ctx = { ...callerOf(request), signal: responseGone(reply) };
      const events = await operations.snapshotWorkload(ctx, request.params.id, { leavePaused: request.body?.leavePaused ?? false });
      return sendNdjson(reply, events, (err) => logger.error('snapshot stream failed', { reqId: request.id, err }));
    },
  );
}

function streamOf(chunks: AsyncIterable<Buffer>, onError: (err: unknown) => void): Readable {
  const body = Readable.from(chunks, { objectMode: false });
  body.once('error', (err) => {
    // Headers are out: all that is left is to cut the response short.
    if (httpErrorFor(err).serverFault) onError(err);
  });
  return body;
}

function frame(channel: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload;
  return Buffer.concat([Buffer.from([channel]), data]);
}

/** Both directions of one exec over its WebSocket. */
function pumpExec(socket: WebSocket, channel: ExecChannel, logger: Logger, reqId: string): void {
  let finished = false;
  const window = new SocketSendWindow(socket);
  // Input: frames the upstream has not accepted yet hold the client back (the socket stops reading).
  let pendingInput = 0;
  let inputPaused = false;
  const inputAccepted = () => {
    pendingInput--;
    if (inputPaused && pendingInput === 0) {
      inputPaused = false;
      socket.resume();
    }
  };
  socket.on('message', (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
    if (finished) return;
    if (!isBinary) {
      socket.close(1003, 'binary frames only');
      return;
    }
    const message = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    if (message.length === 0) return;
    const payload = message.subarray(1);
    const send = (() => {
      switch (message[0]) {
        case EXEC_CHANNELS.stdin:
          return channel.send({ type: 'stdin', data: payload });
        case EXEC_CHANNELS.stdinEof:
          return channel.send({ type: 'eof' });
        case EXEC_CHANNELS.resize: {
          let size: { columns?: unknown; rows?: unknown };
          try {
            size = JSON.parse(payload.toString('utf8')) as { columns?: unknown; rows?: unknown };
          } catch {
            size = {};
          }
          return channel.send({ type: 'resize', columns: Number(size.columns), rows: Number(size.rows) });
        }
        default:
          return Promise.resolve();
      }
    })();
    pendingInput++;
    if (!inputPaused && pendingInput >= EXEC_STDIN_PENDING_FRAMES) {
      inputPaused = true;
      socket.pause();
    }
    send.then(inputAccepted, (err: unknown) => {
      inputAccepted();
      fail(err);
    });
  });
  socket.once('close', () => {
    finished = true;
    window.release();
    channel.close();
  });
  const fail = (err: unknown) => {
    if (finished) return;
    finished = true;
    const failure = httpErrorFor(err);
    if (failure.serverFault) logger.error('exec failed', { reqId, err });
    socket.send(frame(EXEC_CHANNELS.error, JSON.stringify(failure.body)));
    socket.close(1011);
    channel.close();
  };
  void (async () => {
    try {
      for await (const output of channel.output) {
        if (output.type === 'exit') {
          finished = true;
          socket.send(frame(EXEC_CHANNELS.exit, JSON.stringify({ exitCode: output.exitCode })));
          socket.close(1000);
          return;
        }
        // The next output is read from upstream only once the client has taken this far.
        window.send(frame(output.type === 'stdout' ? EXEC_CHANNELS.stdout : EXEC_CHANNELS.stderr, output.data));
        await window.room();
      }
      // Ended without an exit: the upstream went away.
      if (!finished) fail(Object.assign(new Error('exec ended without an exit status')));
    } catch (err) {
      fail(err);
    }
  })();
}
