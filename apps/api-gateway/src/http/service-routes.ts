import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Logger } from '@corral/logging';
import type { OperationContext } from '../operations/corral-operations';
import type { ServiceOperations } from '../operations/service-operations';
import { idempotencyHooks, type IdempotencyStore } from './idempotency';
import { serviceRouteSchemas } from './service-schemas';
import { deploymentView, planView, purgeView, serviceView } from './service-views';

// REST routes of service deploys. The definition is TOML, sent as
// `application/toml` or as JSON `{"definition": "<toml>"}`. Mutating
// routes honour Idempotency-Key.

export interface ServiceRouteOptions {
  services: ServiceOperations;
  idempotency: IdempotencyStore;
  logger: Logger;
  callerOf(request: FastifyRequest): OperationContext;
}

interface NameParams {
  name: string;
}

const definitionOf = (body: unknown): string => (typeof body === 'string' ? body : ((body as { definition?: string } | undefined)?.definition ?? ''));

export async function registerServiceRoutes(api: FastifyInstance, { services, idempotency, logger, callerOf }: ServiceRouteOptions): Promise<void> {
  // A child context, so the TOML body parser exists for these routes only.
  await api.register(async (scope) => {
    scope.addContentTypeParser('application/toml', { parseAs: 'string' }, (_request, body, done) => done(null, body));
    const once = idempotencyHooks(idempotency, logger);

    scope.post('/v1/services/plan', { schema: serviceRouteSchemas.planService }, async (request) =>
      planView(await services.planService(callerOf(request), definitionOf(request.body))),
    );

    scope.post('/v1/services', { schema: serviceRouteSchemas.deployService, preHandler: once.preHandler, onSend: once.onSend }, async (request, reply) => {
      const outcome = await services.deployService(callerOf(request), definitionOf(request.body));
      const started = outcome.deployment?.state === 'running';
      return reply
        .code(started ? 202 : 200)
        .header('location', `/v1/services/${encodeURIComponent(outcome.service.name)}`)
        .send({ service: serviceView(outcome.service), deployment: outcome.deployment ? deploymentView(outcome.deployment) : null, plan: planView(outcome.plan) });
    });

    scope.get('/v1/services', { schema: serviceRouteSchemas.listServices }, async (request) => ({
      services: (await services.listServices(callerOf(request))).map(serviceView),
    }));

    scope.get<{ Params: NameParams }>('/v1/services/:name', { schema: serviceRouteSchemas.getService }, async (request) =>
      serviceView(await services.getService(callerOf(request), request.params.name)),
    );

    scope.post<{ Params: NameParams }>('/v1/services/:name/stop', { schema: serviceRouteSchemas.stopService, preHandler: once.preHandler, onSend: once.onSend }, async (request) =>
      serviceView(await services.stopService(callerOf(request), request.params.name)),
    );

    scope.delete<{ Params: NameParams }>('/v1/services/:name', { schema: serviceRouteSchemas.undeployService, preHandler: once.preHandler, onSend: once.onSend }, async (request) =>
      serviceView(await services.undeployService(callerOf(request), request.params.name)),
    );

    scope.post<{ Params: NameParams; Querystring: { dry_run?: boolean } }>(
      '/v1/services/:name/purge',
      { schema: serviceRouteSchemas.purgeComponents, preHandler: once.preHandler, onSend: once.onSend },
      async (request) => purgeView(await services.purgeComponents(callerOf(request), request.params.name, request.query.dry_run === true)),
    );
  });
}
