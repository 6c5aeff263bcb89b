import { errorFromCode, workloadExtrasFromWire } from '@corral/domain';
import { implementServerStream, implementUnary, type CallContext, type ServiceRegistration } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { isServerFault, toPublicError } from '../errors/public-error';
import type { CorralOperations, OperationContext } from '../operations/corral-operations';

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

export function corralGrpcService(operations: CorralOperations, logger: Logger): ServiceRegistration {
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
      return { workload: await operations.deleteWorkload(await authenticated(ctx), request.id) };
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

  return {
    definition: apiV1.CorralServiceService,
    implementation: { ...implementUnary(apiV1.CorralServiceService, sanitized, logger), ...streams },
  };
}
