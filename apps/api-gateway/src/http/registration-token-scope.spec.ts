import type { FastifyInstance } from 'fastify';
import { InvalidArgumentError } from '@corral/domain';
import { createClient, Metadata, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { corralGrpcService } from '../grpc/corral-grpc-service';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';

// A registration token's scope (host name glob, required labels) through the
// public API: REST body and public gRPC reach host-registry with it, which
// validates it (its own tests); the gateway only shapes it.

const ADMIN_KEY = 'crl_admin000_adminsecret';
const TEAM_A_KEY = 'crl_teamaaaa_asecret';
const keys = {
  [ADMIN_KEY]: { keyId: 'k-admin', admin: true, teamId: null },
  [TEAM_A_KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' },
};

describe('registration token scope through the public API', () => {
  let registry: FakeHostRegistry;
  let app: FastifyInstance;
  let server: RunningGrpcServer;
  let grpcClient: PromiseClient<apiV1.CorralServiceClient>;

  beforeAll(async () => {
    registry = new FakeHostRegistry();
    const operations = createCorralOperations({ scheduler: new FakeScheduler(), hostRegistry: registry, authenticate: fakeAuthenticator(keys) });
    app = await buildHttpApp({ operations, logger: silentLogger, bodyLimitBytes: 1024 * 1024 });
    server = await startGrpcServer({ host: '127.0.0.1', port: 0, logger: silentLogger, services: [corralGrpcService(operations, silentLogger)] });
    grpcClient = createClient(apiV1.CorralServiceClient, server.address, {
      deadlineMs: 5000,
      metadata: () => {
        const md = new Metadata();
        md.set('authorization', `Bearer ${TEAM_A_KEY}`);
        return md;
      },
    });
  });
  afterAll(async () => {
    grpcClient?.close();
    await server?.stop();
    await app?.close();
  });

  const post = (payload: unknown, key = TEAM_A_KEY) =>
    app.inject({ method: 'POST', url: '/v1/hosts/registration-tokens', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, payload: JSON.stringify(payload) });

  it('passes a REST scope on to host-registry with the team and TTL', async () => {
    const res = await post({ ttlSeconds: 900, description: 'rack 7', scope: { namePattern: 'rack7-*', labels: { zone: 'b', tier: 'gpu' } } });
    expect(res.statusCode).toBe(201);
    expect(registry.tokens.at(-1)).toEqual({ ttlSeconds: 900, teamId: 'team-a', description: 'rack 7', scope: { namePattern: 'rack7-*', labels: { zone: 'b', tier: 'gpu' } } });
  });

  it('sends no scope when none is given, and fills in the half left out', async () => {
    expect((await post({ description: 'any host' }, ADMIN_KEY)).statusCode).toBe(201);
    expect(registry.tokens.at(-1)?.scope).toBeUndefined();
    expect((await post({ scope: { labels: { zone: 'a' } } })).statusCode).toBe(201);
    expect(registry.tokens.at(-1)?.scope).toEqual({ namePattern: '', labels: { zone: 'a' } });
  });

  it.each([
    ['an unknown scope field', { scope: { hostname: 'x' } }, 'scope.hostname'],
    ['a label value that is not a string', { scope: { labels: { zone: 1 } } }, 'scope.labels.zone'],
    ['a pattern that is not a string', { scope: { namePattern: ['a*'] } }, 'scope.namePattern'],
    ['a scope that is not an object', { scope: 'rack-*' }, 'scope'],
  ])('rejects %s with 400 naming the field', async (_what, payload, field) => {
    const before = registry.tokens.length;
    const res = await post(payload);
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: 'invalid_argument', field });
    expect(registry.tokens.length).toBe(before);
  });

  it("passes host-registry's refusal of a malformed pattern through with its field", async () => {
    registry.failNext(new InvalidArgumentError('scope.namePattern must be a host name glob (letters, digits, ".", "-", "*", "?")', { field: 'scope.namePattern' }));
    const res = await post({ scope: { namePattern: 'rack 7/*' } });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: 'invalid_argument', field: 'scope.namePattern' });
  });

  it('passes a public gRPC scope on to host-registry', async () => {
    await grpcClient.createRegistrationToken({ ttlSeconds: 0, description: 'grpc rack', scope: { namePattern: 'edge-?', labels: { zone: 'c' } } });
    expect(registry.tokens.at(-1)).toEqual({ ttlSeconds: 3600, teamId: 'team-a', description: 'grpc rack', scope: { namePattern: 'edge-?', labels: { zone: 'c' } } });
    await grpcClient.createRegistrationToken({ ttlSeconds: 0, description: 'grpc any', scope: undefined });
    expect(registry.tokens.at(-1)?.scope).toBeUndefined();
  });

  it('documents the scope in the OpenAPI document', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    const body = doc.paths['/v1/hosts/registration-tokens'].post.requestBody.content['application/json'].schema;
    expect(Object.keys(body.properties.scope.properties)).toEqual(['namePattern', 'labels']);
  });
});
