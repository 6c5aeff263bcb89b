import type { FastifyInstance } from 'fastify';
import { silentLogger } from '@corral/logging';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';

describe('OpenAPI document', () => {
  let app: FastifyInstance;
  let doc: {
    openapi: string;
    paths: Record<string, Record<string, { security?: unknown[]; requestBody?: unknown; responses: Record<string, unknown> }>>;
    components: { securitySchemes: Record<string, unknown>; schemas: Record<string, unknown> };
    security: unknown[];
  };

  beforeAll(async () => {
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler: new FakeScheduler(), hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator({}) }),
      logger: silentLogger,
      bodyLimitBytes: 1024,
    });
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    doc = res.json();
  });
  afterAll(() => app.close());

  it('is OpenAPI 3.1', () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
  });

  it('lists every route', () => {
    const routes = Object.entries(doc.paths).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`));
    expect(routes.sort()).toEqual(
      [
        'GET /healthz',
        'GET /readyz',
        'GET /v1/whoami',
        'POST /v1/hosts/registration-tokens',
        'GET /v1/hosts',
        'GET /v1/hosts/{id}',
        'POST /v1/hosts/{id}/drain',
        'POST /v1/hosts/{id}/undrain',
        'DELETE /v1/hosts/{id}',
        'GET /v1/hosts/registration-tokens',
        'DELETE /v1/hosts/registration-tokens/{id}',
        'GET /v1/fleet/health',
        'POST /v1/workloads',
        'GET /v1/workloads',
        'GET /v1/workloads/{id}',
        'DELETE /v1/workloads/{id}',
        'GET /v1/workloads/{id}/logs',
        'POST /v1/workloads/{id}/pause',
        'POST /v1/workloads/{id}/resume',
        'GET /v1/workloads/{id}/exec',
        'GET /v1/workloads/{id}/files',
        'PUT /v1/workloads/{id}/files',
        'POST /v1/workloads/{id}/snapshots',
        'POST /v1/workloads/{id}/snapshots/{snapshotId}/restore',
        'GET /v1/workloads/{id}/snapshots',
        'DELETE /v1/workloads/{id}/snapshots/{snapshotId}',
        'POST /v1/hosts/{id}/images',
        'POST /v1/hosts/{id}/images/pull',
        'GET /v1/hosts/{id}/images',
        'GET /v1/events',
        'POST /v1/services/plan',
        'POST /v1/services',
        'GET /v1/services',
        'GET /v1/services/{name}',
        'POST /v1/services/{name}/stop',
        'DELETE /v1/services/{name}',
        'POST /v1/services/{name}/purge',
      ].sort(),
    );
  });

  it('documents the exec WebSocket framing, the files routes and the snapshot stream', () => {
    const exec = doc.paths['/v1/workloads/{id}/exec'].get as unknown as { description: string; parameters: { name: string }[] };
    expect(exec.description).toContain('first byte names its channel');
    expect(exec.parameters.map((p) => p.name)).toEqual(expect.arrayContaining(['id', 'command', 'tty']));
    expect(doc.paths['/v1/workloads/{id}/files'].put.responses['413']).toBeDefined();
    const snapshot = doc.paths['/v1/workloads/{id}/snapshots'].post.responses['200'] as { content: Record<string, unknown> };
    expect(Object.keys(snapshot.content)).toEqual(['application/x-ndjson']);
    const list = doc.paths['/v1/workloads/{id}/snapshots'].get.responses['200'] as { content: { 'application/json': { schema: { properties: Record<string, unknown> } } } };
    expect(Object.keys(list.content['application/json'].schema.properties)).toEqual(['snapshots']);
    const del = doc.paths['/v1/workloads/{id}/snapshots/{snapshotId}'].delete.responses as Record<string, unknown>;
    expect(Object.keys(del)).toEqual(expect.arrayContaining(['204', '404', '409']));
  });

  it('documents DELETE /v1/workloads/{id} as stop, and with purge=true as teardown to retired', () => {
    const del = doc.paths['/v1/workloads/{id}'].delete as unknown as { description: string; parameters: { name: string; in: string; schema: { type: string } }[] };
    expect(del.description).toContain('purge=true');
    expect(del.description).toContain('retired');
    expect(del.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'purge', in: 'query', schema: expect.objectContaining({ type: 'boolean' }) })]));
  });

  it('documents the fleet routes: the 409 of a refused host delete lists the workloads', () => {
    const del = doc.paths['/v1/hosts/{id}'].delete;
    expect(JSON.stringify(del.responses['409'])).toContain('#/components/schemas/HostInUse');
    expect(JSON.stringify(doc.components.schemas['HostInUse'])).toContain('"affectedWorkloads"');
    expect(JSON.stringify(del.responses['200'])).toContain('#/components/schemas/HostDeletion');
    expect(JSON.stringify(doc.paths['/v1/hosts/registration-tokens'].get.responses['200'])).toContain('#/components/schemas/RegistrationToken');
    expect(JSON.stringify(doc.paths['/v1/fleet/health'].get.responses['200'])).toContain('#/components/schemas/FleetHealth');
    expect(JSON.stringify(doc.components.schemas['RegistrationToken'])).not.toMatch(/"(token|hash|secretHash)"/);
  });

  it('documents the audit trail with its filters and the NDJSON follow stream', () => {
    const events = doc.paths['/v1/events'].get as unknown as { parameters: { name: string }[]; responses: Record<string, { content: Record<string, unknown> }> };
    expect(events.parameters.map((p) => p.name)).toEqual(expect.arrayContaining(['since', 'after', 'subject', 'kind', 'limit', 'follow']));
    expect(Object.keys(events.responses['200'].content)).toEqual(['application/json', 'application/x-ndjson']);
  });

  it('declares bearer authentication, waived only for health checks', () => {
    expect(doc.components.securitySchemes).toEqual({ bearerAuth: expect.objectContaining({ type: 'http', scheme: 'bearer' }) });
    expect(doc.security).toEqual([{ bearerAuth: [] }]);
    expect(doc.paths['/healthz'].get.security).toEqual([]);
    expect(doc.paths['/v1/workloads'].post.security).toBeUndefined();
  });

  it('describes request bodies and named response schemas', () => {
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(['Workload', 'Host', 'Error']));
    const create = doc.paths['/v1/workloads'].post;
    expect(JSON.stringify(create.requestBody)).toContain('"additionalProperties":false');
    expect(JSON.stringify(create.responses['201'])).toContain('#/components/schemas/Workload');
    expect(JSON.stringify(doc.paths['/v1/workloads/{id}/logs'].get.responses['200'])).toContain('text/plain');
    expect(JSON.stringify(doc.paths['/v1/workloads/{id}/pause'].post.responses['200'])).toContain('#/components/schemas/Workload');
    const workload = JSON.stringify(doc.components.schemas['Workload']);
    for (const field of ['"image"', '"resources"', '"routes"', '"ports"', '"guestPort"', '"hostPort"', '"vm"']) expect(workload).toContain(field);
    const body = JSON.stringify(create.requestBody);
    for (const field of ['"image"', '"memoryMb"', '"vcpus"', '"routes"', '"kernel"']) expect(body).toContain(field);
  });

  it('serves Swagger UI from the package, not a CDN', async () => {
    const page = await app.inject({ method: 'GET', url: '/docs/' });
    expect(page.statusCode).toBe(200);
    expect(page.body).not.toMatch(/https?:\/\/(unpkg|cdn)/);
    const bundle = await app.inject({ method: 'GET', url: '/docs/static/swagger-ui-bundle.js' });
    expect(bundle.statusCode).toBe(200);
  });
});
