import { errorFromCode, InvalidArgumentError, workloadExtrasFromWire } from '@corral/domain';
import { implementBidiStream, implementClientStream, implementServerStream, implementUnary, type CallContext, type ServiceRegistration } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { isServerFault, toPublicError } from '../errors/public-error';
import type { CorralOperations, OperationContext } from '../operations/corral-operations';
import { createImageOperations, type ImageOperations } from '../operations/image-operations';

// The public gRPC adapter: corral.api.v1.CorralService over the same
// operations as REST, authenticated by "authorization: Bearer <key>"
// metadata. Errors leave with the same fixed messages REST uses, because
// implementUnary would otherwise pass a backend's typed error text through.

type Handlers = Parameters<typeof implementUnary<typeof apiV1.CorralServiceService>>[1];

function authorizationOf(ctx: CallContext): string | undefined {
  const values = ctx.metadata.get('authorization');
  // Two credentials on one call is not something to pick from.
  return values.length === 1 ? values[0].toString() : undefined;
}

/** Default largest archive through ImportHostImage. */
export const DEFAULT_IMAGE_MAX_BYTES = 8 * 1024 * 1024 * 1024;

/** Default largest upload through WriteWorkloadFile. */
export const DEFAULT_FILE_MAX_BYTES = 256 * 1024 * 1024;

export function corralGrpcService(
  operations: CorralOperations,
  logger: Logger,
  options: { fileMaxBytes?: number; images?: ImageOperations; imageMaxBytes?: number } = {},
): ServiceRegistration {
  const fileMaxBytes = options.fileMaxBytes ?? DEFAULT_FILE_MAX_BYTES;
  const images = options.images ?? createImageOperations(undefined);
  const imageMaxBytes = options.imageMaxBytes ?? DEFAULT_IMAGE_MAX_BYTES;
  const authenticated = async (ctx: CallContext): Promise<OperationContext> => ({
    caller: await operations.authenticate(authorizationOf(ctx)),
    signal: ctx.signal,
  });

  const handlers: Handlers = {
    async whoAmI(_request, ctx) {
      const me = await operations.whoAmI(await authenticated(ctx));
      return { keyId: me.keyId, admin: me.admin, teamId: me.teamId ?? '' };
    },
    async createRegistrationToken(request, ctx) {
      return operations.createRegistrationToken(await authenticated(ctx), { ttlSeconds: request.ttlSeconds, description: request.description });
    },
    async listHosts(_request, ctx) {
      return { hosts: await operations.listHosts(await authenticated(ctx)) };
    },
    async getHost(request, ctx) {
      return { host: await operations.getHost(await authenticated(ctx), request.id) };
    },
    async createWorkload(request, ctx) {
      const spec = { name: request.name, driver: request.driver, command: request.command, env: request.env, ...workloadExtrasFromWire(request) };
      return { workload: await operations.createWorkload(await authenticated(ctx), spec) };
    },
    async getWorkload(request, ctx) {
      return { workload: await operations.getWorkload(await authenticated(ctx), request.id) };
    },
    async listWorkloads(_request, ctx) {
      return { workloads: await operations.listWorkloads(await authenticated(ctx)) };
    },
    async deleteWorkload(request, ctx) {
      return { workload: await operations.deleteWorkload(await authenticated(ctx), request.id, { purge: request.purge }) };
    },
    async pauseWorkload(request, ctx) {
      return { workload: await operations.pauseWorkload(await authenticated(ctx), request.id) };
    },
    async resumeWorkload(request, ctx) {
      return { workload: await operations.resumeWorkload(await authenticated(ctx), request.id) };
    },
    async getWorkloadLogs(request, ctx) {
      return operations.getWorkloadLogs(await authenticated(ctx), request.id, request.tailBytes);
    },
    async restoreWorkload(request, ctx) {
      return { workload: await operations.restoreWorkload(await authenticated(ctx), request.id, request.snapshotId, { name: request.name }) };
    },
    async listWorkloadDirectory(request, ctx) {
      const entries = await operations.listWorkloadDirectory(await authenticated(ctx), request.id, request.path);
      return { entries: entries.map((e) => ({ ...e, modifiedAt: e.modifiedAt ? new Date(e.modifiedAt) : undefined })) };
    },
    // Fleet membership (operations/fleet-operations.ts).
    async drainHost(request, ctx) {
      return { host: await operations.drainHost(await authenticated(ctx), request.id) };
    },
    async undrainHost(request, ctx) {
      return { host: await operations.undrainHost(await authenticated(ctx), request.id) };
    },
    async deleteHost(request, ctx) {
      // A refusal is FAILED_PRECONDITION whose message names the workloads.
      return operations.deleteHost(await authenticated(ctx), request.id, { force: request.force });
    },
    async getFleetHealth(_request, ctx) {
      return { health: await operations.getFleetHealth(await authenticated(ctx)) };
    },
    async listRegistrationTokens(_request, ctx) {
      return { tokens: await operations.listRegistrationTokens(await authenticated(ctx)) };
    },
    async revokeRegistrationToken(request, ctx) {
      return { token: await operations.revokeRegistrationToken(await authenticated(ctx), request.id) };
    },
    async listHostImages(request, ctx) {
      const list = await images.listHostImages(await authenticated(ctx), request.hostId);
      return { images: list.map((i) => ({ ...i, createdAt: i.createdAt ? new Date(i.createdAt) : undefined })) };
    },
  };

  const sanitized = Object.fromEntries(
    Object.entries(handlers).map(([name, handler]) => [
      name,
      async (request: never, ctx: CallContext) => {
        try {
          return await (handler as (request: never, ctx: CallContext) => Promise<unknown>)(request, ctx);
        } catch (err) {
          const pub = toPublicError(err);
          if (isServerFault(pub.code)) logger.error('gRPC call failed', { method: ctx.method, err });
          throw errorFromCode(pub.code, pub.message, pub.field ? { field: pub.field } : {});
        }
      },
    ]),
  ) as Handlers;

  const publicError = (err: unknown, ctx: CallContext) => {
    const pub = toPublicError(err);
    if (isServerFault(pub.code)) logger.error('gRPC call failed', { method: ctx.method, err });
    return errorFromCode(pub.code, pub.message, pub.field ? { field: pub.field } : {});
  };

  const streams = implementServerStream(
    apiV1.CorralServiceService,
    {
      async *readWorkloadFile(request, ctx) {
        try {
          for await (const chunk of await operations.readWorkloadFile(await authenticated(ctx), request.id, request.path)) yield { chunk };
        } catch (err) {
          throw publicError(err, ctx);
        }
      },
      async *snapshotWorkload(request, ctx) {
        try {
          for await (const event of await operations.snapshotWorkload(await authenticated(ctx), request.id, { leavePaused: request.leavePaused })) {
            if (event.type === 'progress') {
              const { type: _type, ...progress } = event;
              yield { kind: { $case: 'progress', value: progress } };
            } else {
              const { type: _type, ...result } = event;
              yield { kind: { $case: 'result', value: result } };
            }
          }
        } catch (err) {
          throw publicError(err, ctx);
        }
      },
      async *streamWorkloadLogs(request, ctx) {
        try {
          const chunks = await operations.streamWorkloadLogs(await authenticated(ctx), request.id, { tailBytes: request.tailBytes, follow: request.follow });
          for await (const data of chunks) yield { data };
        } catch (err) {
          throw publicError(err, ctx);
        }
      },
    },
    logger,
  );

  const duplex = {
    ...implementBidiStream(
      apiV1.CorralServiceService,
      {
        async *execWorkload(requests, ctx) {
          const iterator = requests[Symbol.asyncIterator]();
          let channel;
          try {
            const caller = await authenticated(ctx);
            const first = await iterator.next();
            if (first.done || first.value.kind?.$case !== 'start') throw new InvalidArgumentError('the first message must be start', { field: 'start' });
            const start = first.value.kind.value;
            channel = await operations.execWorkload(caller, start.id, {
              command: start.command,
              tty: start.tty,
              env: start.env,
              workingDir: start.workingDir,
              columns: start.size?.columns,
              rows: start.size?.rows,
            });
          } catch (err) {
            throw publicError(err, ctx);
          }
          const open = channel;
          void (async () => {
            try {
              for (;;) {
                const next = await iterator.next();
                if (next.done) break;
                const kind = next.value.kind;
                if (kind?.$case === 'stdin') await open.send({ type: 'stdin', data: Buffer.from(kind.value) });
                else if (kind?.$case === 'stdinEof') await open.send({ type: 'eof' });
                else if (kind?.$case === 'resize') await open.send({ type: 'resize', columns: kind.value.columns, rows: kind.value.rows });
              }
            } catch {
              open.close();
            }
          })();
          try {
            yield { kind: { $case: 'started', value: {} } };
            for await (const output of open.output) {
              if (output.type === 'exit') yield { kind: { $case: 'exit', value: { exitCode: output.exitCode } } };
              else yield { kind: { $case: output.type, value: output.data } };
            }
          } catch (err) {
            throw publicError(err, ctx);
          } finally {
            open.close();
          }
        },
        async *importHostImage(requests, ctx) {
          let events;
          try {
            const caller = await authenticated(ctx);
            const iterator = requests[Symbol.asyncIterator]();
            const first = await iterator.next();
            if (first.done || first.value.kind?.$case !== 'header') throw new InvalidArgumentError('the first message must be the header', { field: 'header' });
            const header = first.value.kind.value;
            const content = (async function* () {
              for (;;) {
                const next = await iterator.next();
                // Without eof the upload was cut short: nothing may be imported.
                if (next.done) throw new InvalidArgumentError('the upload ended before eof', { field: 'eof' });
                const kind = next.value.kind;
                if (kind?.$case === 'eof') return;
                if (kind?.$case !== 'chunk') throw new InvalidArgumentError('only archive chunks may follow the header', { field: 'chunk' });
                yield Buffer.from(kind.value);
              }
            })();
            events = await images.importHostImage(
              caller,
              header.hostId,
              { ref: header.ref, format: header.format || undefined, maxBytes: imageMaxBytes, ...(header.sizeBytes ? { sizeBytes: header.sizeBytes } : {}) },
              content,
            );
            for await (const event of events) {
              if (event.type === 'progress') {
                const { type: _type, ...progress } = event;
                yield { kind: { $case: 'progress', value: progress } };
              } else {
                const { type: _type, ...result } = event;
                yield { kind: { $case: 'result', value: result } };
              }
            }
          } catch (err) {
            throw publicError(err, ctx);
          }
        },
      },
      logger,
    ),
    ...implementClientStream(
      apiV1.CorralServiceService,
      {
        async writeWorkloadFile(requests, ctx) {
          try {
            const caller = await authenticated(ctx);
            const iterator = requests[Symbol.asyncIterator]();
            const first = await iterator.next();
            if (first.done || first.value.kind?.$case !== 'header') throw new InvalidArgumentError('the first message must be the header', { field: 'header' });
            const header = first.value.kind.value;
            const content = (async function* () {
              for (;;) {
                const next = await iterator.next();
                // Without eof the upload was cut short: nothing may be written.
                if (next.done) throw new InvalidArgumentError('the upload ended before eof', { field: 'eof' });
                const kind = next.value.kind;
                if (kind?.$case === 'eof') return;
                if (kind?.$case !== 'chunk') throw new InvalidArgumentError('only content chunks may follow the header', { field: 'chunk' });
                yield Buffer.from(kind.value);
              }
            })();
            return await operations.writeWorkloadFile(caller, header.id, header.path, content, { mode: header.mode, maxBytes: fileMaxBytes });
          } catch (err) {
            throw publicError(err, ctx);
          }
        },
      },
      logger,
    ),
  };

  return {
    definition: apiV1.CorralServiceService,
    implementation: { ...implementUnary(apiV1.CorralServiceService, sanitized, logger), ...streams, ...duplex },
  };
}
