import { errorFromCode, workloadExtrasFromWire } from '@corral/domain';
import {
  firstMessageOf,
  forwardRequests,
  implementBidiStream,
  implementClientStream,
  implementServerStream,
  implementUnary,
  uploadedChunks,
  type CallContext,
  type ServiceRegistration,
} from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { isServerFault, toPublicError } from '../errors/public-error';
import type { CorralOperations, OperationContext } from '../operations/corral-operations';
import { createImageOperations, type ImageOperations } from '../operations/image-operations';
import { progressMessagesOf } from '../operations/progress-events';
import { createServiceOperations, type ServiceOperations } from '../operations/service-operations';
import { createEventOperations, type EventFilter, type EventOperations, type EventView } from '../operations/event-operations';
import { memoryIdempotencyStore, type IdempotencyStore } from '../operations/idempotency-store';
import { IDEMPOTENCY_METADATA_KEY, idempotencyKeyOf, idempotentCalls, type AnswerCodec } from '../operations/idempotent-calls';

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
  options: { fileMaxBytes?: number; images?: ImageOperations; imageMaxBytes?: number; services?: ServiceOperations; events?: EventOperations; idempotency?: IdempotencyStore } = {},
): ServiceRegistration {
  const fileMaxBytes = options.fileMaxBytes ?? DEFAULT_FILE_MAX_BYTES;
  const images = options.images ?? createImageOperations(undefined);
  const services = options.services ?? createServiceOperations(undefined);
  const events = options.events ?? createEventOperations(undefined);
  const imageMaxBytes = options.imageMaxBytes ?? DEFAULT_IMAGE_MAX_BYTES;
  const authenticated = async (ctx: CallContext): Promise<OperationContext> => ({
    caller: await operations.authenticate(authorizationOf(ctx)),
    signal: ctx.signal,
  });
  // Idempotency-Key (metadata `idempotency-key`) on the calls REST takes it on, over REST's store.
  const calls = idempotentCalls(options.idempotency ?? memoryIdempotencyStore(), logger);
  const once = async <T>(ctx: CallContext, request: unknown, codec: AnswerCodec<T>, call: (context: OperationContext) => Promise<T>): Promise<T> => {
    const key = idempotencyKeyOf(ctx.metadata.get(IDEMPOTENCY_METADATA_KEY));
    const context = await authenticated(ctx);
    return calls.once(context.caller, key, ctx.method, request, codec, () => call(context));
  };

  const handlers: Handlers = {
    async listEvents(request, ctx) {
      return { events: (await events.listEvents(await authenticated(ctx), eventFilterOf(request))).map(auditEventToProto) };
    },
    async whoAmI(_request, ctx) {
      const me = await operations.whoAmI(await authenticated(ctx));
      return { keyId: me.keyId, admin: me.admin, teamId: me.teamId ?? '' };
    },
    async createRegistrationToken(request, ctx) {
      return operations.createRegistrationToken(await authenticated(ctx), {
        ttlSeconds: request.ttlSeconds,
        description: request.description,
        ...(request.scope ? { scope: { namePattern: request.scope.namePattern, labels: request.scope.labels } } : {}),
      });
    },
    async listHosts(_request, ctx) {
      return { hosts: await operations.listHosts(await authenticated(ctx)) };
    },
    async getHost(request, ctx) {
      return { host: await operations.getHost(await authenticated(ctx), request.id) };
    },
    async createWorkload(request, ctx) {
      const spec = { name: request.name, driver: request.driver, command: request.command, env: request.env, ...workloadExtrasFromWire(request) };
      return once(ctx, request, apiV1.CreateWorkloadResponse, async (context) => ({ workload: await operations.createWorkload(context, spec) }));
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
    async listWorkloadSnapshots(request, ctx) {
      const snapshots = await operations.listWorkloadSnapshots(await authenticated(ctx), request.id);
      return {
        snapshots: snapshots.map((s) => ({
          snapshotId: s.id,
          sourceWorkloadId: s.sourceWorkloadId,
          createdAt: s.createdAt ? new Date(s.createdAt) : undefined,
          sizeBytes: s.sizeBytes,
          driver: s.driver,
        })),
      };
    },
    async deleteWorkloadSnapshot(request, ctx) {
      return operations.deleteWorkloadSnapshot(await authenticated(ctx), request.id, request.snapshotId);
    },
    async listWorkloadDirectory(request, ctx) {
      const entries = await operations.listWorkloadDirectory(await authenticated(ctx), request.id, request.path);
      return { entries: entries.map((e) => ({ ...e, modifiedAt: e.modifiedAt ? new Date(e.modifiedAt) : undefined })) };
    },
    // Fleet membership (operations/fleet-operations.ts).
    async drainHost(request, ctx) {
      const caller = await authenticated(ctx);
      const host = await operations.drainHost(caller, request.id);
      // With migrate: each live workload moved to another host (fleet-operations migrateHostWorkloads).
      const migrations = request.migrate ? await operations.migrateHostWorkloads(caller, request.id, { maxParallel: request.maxParallel || 1 }) : [];
      return { host, migrations };
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
    async planService(request, ctx) {
      return { plan: await services.planService(await authenticated(ctx), request.definitionToml) };
    },
    async deployService(request, ctx) {
      // The public API answers once the rollout has started; follow it with GetService.
      return once(ctx, request, apiV1.DeployServiceResponse, async (context) => {
        const outcome = await services.deployService(context, request.definitionToml);
        return { service: outcome.service, deployment: outcome.deployment, plan: outcome.plan };
      });
    },
    async getService(request, ctx) {
      return { service: await services.getService(await authenticated(ctx), request.name) };
    },
    async listServices(_request, ctx) {
      return { services: await services.listServices(await authenticated(ctx)) };
    },
    async stopService(request, ctx) {
      return once(ctx, request, apiV1.StopServiceResponse, async (context) => ({ service: await services.stopService(context, request.name) }));
    },
    async undeployService(request, ctx) {
      return once(ctx, request, apiV1.UndeployServiceResponse, async (context) => ({ service: await services.undeployService(context, request.name) }));
    },
    async purgeComponents(request, ctx) {
      return once(ctx, request, apiV1.PurgeComponentsResponse, (context) => services.purgeComponents(context, request.name, request.dryRun));
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
      async *streamEvents(request, ctx) {
        try {
          for await (const event of events.followEvents(await authenticated(ctx), eventFilterOf(request.filter ?? apiV1.ListEventsRequest.fromPartial({})))) {
            yield { event: auditEventToProto(event) };
          }
        } catch (err) {
          throw publicError(err, ctx);
        }
      },
      async *readWorkloadFile(request, ctx) {
        try {
          for await (const chunk of await operations.readWorkloadFile(await authenticated(ctx), request.id, request.path)) yield { chunk };
        } catch (err) {
          throw publicError(err, ctx);
        }
      },
      async *snapshotWorkload(request, ctx) {
        try {
          yield* progressMessagesOf(await operations.snapshotWorkload(await authenticated(ctx), request.id, { leavePaused: request.leavePaused }));
        } catch (err) {
          throw publicError(err, ctx);
        }
      },
      async *pullHostImage(request, ctx) {
        try {
          const input = { ref: request.ref, ...(request.credentials ? { credentials: request.credentials } : {}) };
          yield* progressMessagesOf(await images.pullHostImage(await authenticated(ctx), request.hostId, input), {
            progress: (p) => ({ phase: p.phase, ref: p.ref, digest: p.digest ?? '', blobs: p.blobs, alreadyPresent: p.alreadyPresent ?? false }),
            result: (r) => ({ imageId: r.imageId, ref: r.ref, digest: r.digest }),
          });
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
            const start = await firstMessageOf(iterator, 'start', 'start');
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
          void forwardRequests(
            iterator,
            async ({ kind }) => {
              if (kind?.$case === 'stdin') await open.send({ type: 'stdin', data: Buffer.from(kind.value) });
              else if (kind?.$case === 'stdinEof') await open.send({ type: 'eof' });
              else if (kind?.$case === 'resize') await open.send({ type: 'resize', columns: kind.value.columns, rows: kind.value.rows });
            },
            { error: () => open.close() },
          );
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
            const header = await firstMessageOf(iterator, 'header', 'the header');
            // Without eof the upload was cut short: nothing may be imported.
            const content = uploadedChunks(iterator, 'archive');
            events = await images.importHostImage(
              caller,
              header.hostId,
              { ref: header.ref, format: header.format || undefined, maxBytes: imageMaxBytes, ...(header.sizeBytes ? { sizeBytes: header.sizeBytes } : {}) },
              content,
            );
            yield* progressMessagesOf(events);
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
            const header = await firstMessageOf(iterator, 'header', 'the header');
            // Without eof the upload was cut short: nothing may be written.
            const content = uploadedChunks(iterator);
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

function eventFilterOf(request: apiV1.ListEventsRequest): EventFilter {
  return {
    ...(request.afterId > 0 ? { afterId: BigInt(request.afterId) } : {}),
    ...(request.since ? { since: request.since } : {}),
    ...(request.subjectId ? { subjectId: request.subjectId } : {}),
    ...(request.kind ? { kind: request.kind } : {}),
    ...(request.limit > 0 ? { limit: request.limit } : {}),
  };
}

function auditEventToProto(event: EventView): apiV1.AuditEvent {
  return {
    id: Number(event.id),
    at: new Date(event.at),
    actor: event.actor,
    kind: event.kind,
    action: event.action,
    outcome: event.outcome,
    subjectType: event.subjectType,
    subjectId: event.subjectId,
    teamId: event.teamId ?? '',
    reason: event.reason,
    dataJson: JSON.stringify(event.data),
  };
}
