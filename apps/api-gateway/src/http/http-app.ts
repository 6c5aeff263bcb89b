import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import websocket from '@fastify/websocket';
import type { WorkloadSpecInput } from '@corral/domain';
import { TERMINAL_STATES } from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { Caller } from '../operations/caller';
import { RESOURCE_ID, type CorralOperations, type OperationContext, type RegistrationTokenInput } from '../operations/corral-operations';
import { registerFleetRoutes } from './fleet-routes';
import { fleetSharedSchemas } from './fleet-schemas';
import { httpErrorFor } from './http-errors';
import { compileRequestValidator } from './request-validation';
import { routeSchemas, sharedSchemas } from './schemas';
import { hostView, workloadView } from './views';
import { registerWorkloadStreamRoutes } from './workload-stream-routes';
import { createImageOperations, type ImageOperations } from '../operations/image-operations';
import { registerImageRoutes } from './image-routes';
import { createEventOperations, type EventOperations } from '../operations/event-operations';
import { registerEventRoutes } from './event-routes';
import { DEFAULT_REQUEST_TIMEOUTS, enforceRequestTimeouts } from './request-timeouts';
import { createServiceOperations, type ServiceOperations } from '../operations/service-operations';
import { idempotencyHooks, memoryIdempotencyStore, type IdempotencyStore } from './idempotency';
import { registerServiceRoutes } from './service-routes';
import { serviceSharedSchemas } from './service-schemas';

// The REST adapter: routes, request shapes and HTTP status codes over the
// shared operations. It owns nothing else.

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null;
  }
}

/** Named checks the gateway depends on, each true when it works right now. */
export type ReadinessCheck = () => Promise<Record<string, boolean>>;

export interface HttpAppOptions {
  operations: CorralOperations;
  logger: Logger;
  /** Largest request body accepted; larger ones get 413. */
  bodyLimitBytes: number;
  /** Largest file upload (PUT …/files); default 256 MiB. */
  fileMaxBytes?: number;
  readiness?: ReadinessCheck;
  /** Host image imports (POST/GET /v1/hosts/{id}/images); absent: they answer UNAVAILABLE. */
  images?: ImageOperations;
  /** The audit trail (GET /v1/events); absent: it answers UNAVAILABLE. */
  events?: EventOperations;
  /** Service deploys (/v1/services); absent: they answer UNAVAILABLE. */
  services?: ServiceOperations;
  /** Where Idempotency-Key answers are kept; in memory by default. */
  idempotency?: IdempotencyStore;
  /** Largest image archive; default 8 GiB. */
  imageMaxBytes?: number;
  /** Time to receive an ordinary request; default 60 s (request-timeouts.ts). */
  requestTimeoutMs?: number;
  /** Time to receive an upload (image import, file PUT); 0: none; default 6 h. */
  uploadTimeoutMs?: number;
}

export const LOGS_TRUNCATED_HEADER = 'x-corral-logs-truncated';

function callerOf(request: FastifyRequest): OperationContext {
  // The authentication hook runs first on every route that reads this.
  if (!request.caller) throw new Error('route reached without an authenticated caller');
  return { caller: request.caller };
}

export async function buildHttpApp(options: HttpAppOptions): Promise<FastifyInstance> {
  const { operations, logger } = options;

  const sendError = (err: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const failure = httpErrorFor(err);
    if (failure.serverFault) logger.error('request failed', { reqId: request.id, method: request.method, route: request.routeOptions?.url, err });
    if (failure.status === 401) void reply.header('www-authenticate', 'Bearer realm="corral"');
    return reply.code(failure.status).type('application/json; charset=utf-8').send(failure.body);
  };

  const app = Fastify({
    logger: false,
    bodyLimit: options.bodyLimitBytes,
    // Room beyond the longest valid id, so a slightly over-long one reaches
    // validation and is named in a 400; absurd lengths get Fastify's 414.
    routerOptions: { maxParamLength: RESOURCE_ID.maxLength * 2 },
    genReqId: () => randomUUID(),
    return503OnClosing: true,
    // A client that trickles a request must not hold a connection forever,
    // but an upload may take hours: Node's one server-wide request timeout
    // is off, and enforceRequestTimeouts below applies one per route.
    requestTimeout: 0,
    // Errors Fastify raises before routing (e.g. a malformed URL).
    frameworkErrors: (err, request, reply) => sendError(err, request, reply),
  });

  enforceRequestTimeouts(app, {
    requestTimeoutMs: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUTS.requestTimeoutMs,
    uploadTimeoutMs: options.uploadTimeoutMs ?? DEFAULT_REQUEST_TIMEOUTS.uploadTimeoutMs,
  });
  app.setValidatorCompiler(compileRequestValidator);
  for (const schema of [...sharedSchemas, ...fleetSharedSchemas, ...serviceSharedSchemas]) app.addSchema(schema);
  const idempotency = options.idempotency ?? memoryIdempotencyStore();
  // Only JSON bodies are accepted: without this, Fastify would hand a
  // text/plain body to the schema, which would blame its type, not its format.
  app.removeContentTypeParser('text/plain');
  // Many clients label an empty body application/json (a DELETE, a POST with
  // all-default fields): treat that as no body rather than malformed JSON.
  // Prototype-poisoning keys are still refused.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') done(null, undefined);
    else parseJson(request, body as string, done);
  });

  app.decorateRequest('caller', null);

  app.setErrorHandler((err, request, reply) => sendError(err, request, reply));

  app.setNotFoundHandler((_request, reply) =>
    reply.code(404).type('application/json; charset=utf-8').send({ error: 'not_found', message: 'no such route' }),
  );

  app.addHook('onSend', async (request, reply, payload) => {
    void reply.header('x-request-id', request.id);
    return payload;
  });

  app.addHook('onResponse', async (request, reply) => {
    logger.debug('http request', {
      reqId: request.id,
      method: request.method,
      route: request.routeOptions.url ?? '(unmatched)',
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 10) / 10,
    });
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Corral API',
        version: 'v1',
        description: 'Run workloads on self-registering hosts. Authenticate with `Authorization: Bearer <api key>`.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'A Corral API key: crl_<prefix>_<secret>' } } },
      security: [{ bearerAuth: [] }],
    },
    refResolver: {
      // Name components after their $id (Workload, Host, Error) rather than def-N.
      buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`),
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true });
  // Exec frames carry stdin chunks; anything bigger is refused by ws itself.
  await app.register(websocket, { options: { maxPayload: 1024 * 1024 } });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/healthz', { schema: routeSchemas.health }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: routeSchemas.ready }, async (_request, reply) => {
    const results = options.readiness ? await options.readiness() : {};
    const ready = Object.values(results).every(Boolean);
    const checks = Object.fromEntries(Object.entries(results).map(([name, ok]) => [name, ok ? 'ok' : 'failing']));
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready', checks });
  });

  await app.register(async (api) => {
    // Runs before the body is read, so an anonymous client cannot make the
    // gateway buffer a body or learn the request schema from 400s.
    api.addHook('onRequest', async (request) => {
      request.caller = await operations.authenticate(request.headers.authorization);
    });

    api.get('/v1/whoami', { schema: routeSchemas.whoAmI }, async (request) => operations.whoAmI(callerOf(request)));

    api.post('/v1/hosts/registration-tokens', {
      schema: routeSchemas.createRegistrationToken,
      // Every field is optional, so no body at all means "all defaults".
      preValidation: async (request) => {
        if (request.body === undefined) request.body = {};
      },
      handler: async (request, reply) => {
        const token = await operations.createRegistrationToken(callerOf(request), request.body as RegistrationTokenInput);
        return reply.code(201).send({ id: token.id, token: token.token, expiresAt: token.expiresAt.toISOString() });
      },
    });

    api.get('/v1/hosts', { schema: routeSchemas.listHosts }, async (request) => ({
      hosts: (await operations.listHosts(callerOf(request))).map(hostView),
    }));

    api.get<{ Params: { id: string } }>('/v1/hosts/:id', { schema: routeSchemas.getHost }, async (request) =>
      hostView(await operations.getHost(callerOf(request), request.params.id)),
    );

    await registerFleetRoutes(api, { operations, callerOf });

    const createOnce = idempotencyHooks(idempotency, logger);
    api.post('/v1/workloads', { schema: routeSchemas.createWorkload, preHandler: createOnce.preHandler, onSend: createOnce.onSend }, async (request, reply) => {
      const body = request.body as WorkloadSpecInput;
      const workload = await operations.createWorkload(callerOf(request), { ...body, env: body.env ?? {} });
      return reply.code(201).header('location', `/v1/workloads/${encodeURIComponent(workload.id)}`).send(workloadView(workload));
    });

    api.get('/v1/workloads', { schema: routeSchemas.listWorkloads }, async (request) => ({
      workloads: (await operations.listWorkloads(callerOf(request))).map(workloadView),
    }));

    api.get<{ Params: { id: string } }>('/v1/workloads/:id', { schema: routeSchemas.getWorkload }, async (request) =>
      workloadView(await operations.getWorkload(callerOf(request), request.params.id)),
    );

    api.delete<{ Params: { id: string }; Querystring: { purge?: boolean } }>('/v1/workloads/:id', { schema: routeSchemas.deleteWorkload }, async (request, reply) => {
      const view = workloadView(await operations.deleteWorkload(callerOf(request), request.params.id, { purge: request.query.purge === true }));
      // 200 once it has come to rest, 202 while it is still on its way there.
      const settled = (TERMINAL_STATES as ReadonlySet<string>).has(view.state);
      return reply.code(settled ? 200 : 202).send(view);
    });

    api.post<{ Params: { id: string } }>('/v1/workloads/:id/pause', { schema: routeSchemas.pauseWorkload }, async (request) =>
      workloadView(await operations.pauseWorkload(callerOf(request), request.params.id)),
    );

    api.post<{ Params: { id: string } }>('/v1/workloads/:id/resume', { schema: routeSchemas.resumeWorkload }, async (request) =>
      workloadView(await operations.resumeWorkload(callerOf(request), request.params.id)),
    );

    await registerWorkloadStreamRoutes(api, { operations, logger, fileMaxBytes: options.fileMaxBytes ?? 256 * 1024 * 1024, callerOf });
    await registerEventRoutes(api, { events: options.events ?? createEventOperations(undefined), callerOf });
    await registerImageRoutes(api, { images: options.images ?? createImageOperations(undefined), logger, imageMaxBytes: options.imageMaxBytes ?? 8 * 1024 * 1024 * 1024, callerOf });
    await registerServiceRoutes(api, { services: options.services ?? createServiceOperations(undefined), idempotency, logger, callerOf });

    api.get<{ Params: { id: string }; Querystring: { tail?: number; follow?: boolean } }>(
      '/v1/workloads/:id/logs',
      { schema: routeSchemas.getWorkloadLogs },
      async (request, reply) => {
        if (request.query.follow) {
          // The backend stream lives as long as the response: when the client
          // goes away (or the response ends) the upstream call is cancelled.
          const gone = new AbortController();
          reply.raw.once('close', () => gone.abort());
          const chunks = await operations.streamWorkloadLogs({ ...callerOf(request), signal: gone.signal }, request.params.id, {
            tailBytes: request.query.tail,
            follow: true,
          });
          const body = Readable.from(chunks, { objectMode: false });
          body.once('error', (err) => {
            // Headers are out: all that is left is to cut the response short.
            const failure = httpErrorFor(err);
            if (failure.serverFault) logger.error('log stream failed', { reqId: request.id, err });
          });
          return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(body);
        }
        const logs = await operations.getWorkloadLogs(callerOf(request), request.params.id, request.query.tail);
        return reply
          .header(LOGS_TRUNCATED_HEADER, String(logs.truncated))
          .type('text/plain; charset=utf-8')
          .send(logs.data);
      },
    );
  });

  await app.ready();
  return app;
}
