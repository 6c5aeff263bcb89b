import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { CorralOperations, OperationContext } from '../operations/corral-operations';
import { fleetRouteSchemas } from './fleet-schemas';
import { fleetHealthView, hostDeletionView, registrationTokenView, workloadMigrationView } from './fleet-views';
import { hostView } from './views';

// REST routes of fleet membership over the shared operations: drain,
// undrain and delete a host, fleet health, registration token list and
// revoke. `GET /v1/hosts/registration-tokens` is a static route, so the
// router prefers it over `GET /v1/hosts/:id`.

export interface FleetRouteOptions {
  operations: CorralOperations;
  callerOf(request: FastifyRequest): OperationContext;
}

interface IdParams {
  id: string;
}

export async function registerFleetRoutes(api: FastifyInstance, { operations, callerOf }: FleetRouteOptions): Promise<void> {
  api.post<{ Params: IdParams; Querystring: { migrate?: boolean; max_parallel?: number } }>('/v1/hosts/:id/drain', { schema: fleetRouteSchemas.drainHost }, async (request) => {
    const ctx = callerOf(request);
    const host = await operations.drainHost(ctx, request.params.id);
    if (request.query.migrate !== true) return hostView(host);
    const migrations = await operations.migrateHostWorkloads(ctx, request.params.id, { maxParallel: request.query.max_parallel });
    return { ...hostView(host), migrations: migrations.map(workloadMigrationView) };
  });

  api.post<{ Params: IdParams }>('/v1/hosts/:id/undrain', { schema: fleetRouteSchemas.undrainHost }, async (request) =>
    hostView(await operations.undrainHost(callerOf(request), request.params.id)),
  );

  api.delete<{ Params: IdParams; Querystring: { force?: boolean } }>('/v1/hosts/:id', { schema: fleetRouteSchemas.deleteHost }, async (request) =>
    hostDeletionView(await operations.deleteHost(callerOf(request), request.params.id, { force: request.query.force === true })),
  );

  api.get('/v1/fleet/health', { schema: fleetRouteSchemas.fleetHealth }, async (request) => fleetHealthView(await operations.getFleetHealth(callerOf(request))));

  api.get('/v1/hosts/registration-tokens', { schema: fleetRouteSchemas.listRegistrationTokens }, async (request) => {
    const now = new Date();
    return { tokens: (await operations.listRegistrationTokens(callerOf(request))).map((t) => registrationTokenView(t, now)) };
  });

  api.delete<{ Params: IdParams }>('/v1/hosts/registration-tokens/:id', { schema: fleetRouteSchemas.revokeRegistrationToken }, async (request) =>
    registrationTokenView(await operations.revokeRegistrationToken(callerOf(request), request.params.id)),
  );
}
