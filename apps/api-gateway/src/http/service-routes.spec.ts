import type { FastifyInstance } from 'fastify';
import { silentLogger } from '@corral/logging';
import { createCorralOperations } from '../operations/corral-operations';
import { createServiceOperations, type ServicesPort } from '../operations/service-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { FakeServices } from '../testing/fake-services';
import { buildHttpApp } from './http-app';
import { memoryIdempotencyStore } from './idempotency';

// /v1/services over HTTP inject against a scripted scheduler: TOML and JSON
// bodies, errors naming the path in the file, team scope, Idempotency-Key
// (replay, 422 on another body, 409 while in flight, 5xx not kept), purge
// dry runs, the routes in the OpenAPI document, and Idempotency-Key on
// POST /v1/workloads.

const KEY_A = 'crl_teamaaaa_asecret';
const KEY_B = 'crl_teambbbb_bsecret';
const keys = { [KEY_A]: { keyId: 'k-a', admin: false, teamId: 'team-a' }, [KEY_B]: { keyId: 'k-b', admin: false, teamId: 'team-b' } };

const TOML = `name = "shop"
[[components]]
name = "api"
runtime = "process"
command = ["/bin/sleep", "100"]
`;

describe('REST services', () => {
  let app: FastifyInstance;
  let services: FakeServices;
  let scheduler: FakeScheduler;

  beforeEach(async () => {
    services = new FakeServices();
    scheduler = new FakeScheduler();
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler, hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator(keys) }),
      services: createServiceOperations(services as unknown as ServicesPort),
      idempotency: memoryIdempotencyStore(),
      logger: silentLogger,
      bodyLimitBytes: 2 * 1024 * 1024,
    });
  });
  afterEach(() => app.close());

  const deploy = (payload: string, headers: Record<string, string> = {}, key = KEY_A) =>
    app.inject({ method: 'POST', url: '/v1/services', payload, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/toml', ...headers } });

  it('deploys a TOML body (202 with the rollout) and a JSON {definition} body, with the caller\'s team', async () => {
    const res = await deploy(TOML);
    expect(res.statusCode).toBe(202);
    expect(res.headers.location).toBe('/v1/services/shop');
    expect(res.json()).toMatchObject({ service: { name: 'shop', teamId: 'team-a' }, deployment: { id: 'dep-1', state: 'running' }, plan: { action: 'create' } });
    const json = await app.inject({ method: 'POST', url: '/v1/services', payload: { definition: TOML }, headers: { authorization: `Bearer ${KEY_A}` } });
    expect(json.statusCode).toBe(202);
    expect(services.deploys.map((d) => [d.teamId, d.definitionToml])).toEqual([
      ['team-a', TOML],
      ['team-a', TOML],
    ]);
  });

  it('refuses a bad definition with the path inside the file, before the scheduler hears of it', async () => {
    const res = await deploy(TOML.replace('runtime = "process"', 'runtime = "process"\ncount = -1'));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: 'invalid_argument', field: 'components[0].count' });
    const syntax = await deploy('name = ');
    expect(syntax.statusCode).toBe(400);
    expect(syntax.json().field).toBe('toml');
    const extra = await app.inject({ method: 'POST', url: '/v1/services', payload: { definition: TOML, wait: true }, headers: { authorization: `Bearer ${KEY_A}` } });
    expect(extra.statusCode).toBe(400);
    expect(services.deploys).toEqual([]);
  });

  it('replays the stored answer for the same Idempotency-Key and body; another body is 422 naming the header', async () => {
    const first = await deploy(TOML, { 'idempotency-key': 'k1' });
    const again = await deploy(TOML, { 'idempotency-key': 'k1' });
    expect(again.statusCode).toBe(first.statusCode);
    expect(again.json()).toEqual(first.json());
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(services.deploys).toHaveLength(1);

    const other = await deploy(TOML.replace('100', '200'), { 'idempotency-key': 'k1' });
    expect(other.statusCode).toBe(422);
    expect(other.json()).toEqual({ error: 'idempotency_key_reused', message: expect.stringContaining('Idempotency-Key'), field: 'Idempotency-Key' });
    expect(services.deploys).toHaveLength(1);
  });

  it('keeps keys per API key, answers 409 while the first request is in flight, and does not keep server faults', async () => {
    let open!: () => void;
    services.gate = new Promise((resolve) => (open = resolve));
    const slow = deploy(TOML, { 'idempotency-key': 'k2' });
    await new Promise((resolve) => setImmediate(resolve));
    while (services.deploys.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const during = await deploy(TOML, { 'idempotency-key': 'k2' });
    expect(during.statusCode).toBe(409);
    expect(during.json()).toMatchObject({ error: 'idempotency_key_in_flight', field: 'Idempotency-Key' });
    open();
    expect((await slow).statusCode).toBe(202);

    // Another caller's same key is another key.
    expect((await deploy(TOML, { 'idempotency-key': 'k2' }, KEY_B)).statusCode).toBe(202);
    expect(services.deploys.map((d) => d.teamId)).toEqual(['team-a', 'team-b']);

    services.failNext = true;
    expect((await deploy(TOML, { 'idempotency-key': 'k3' })).statusCode).toBe(503);
    const retried = await deploy(TOML, { 'idempotency-key': 'k3' });
    expect(retried.statusCode).toBe(202);
    expect(retried.headers['idempotent-replayed']).toBeUndefined();
  });

  it('makes POST /v1/workloads idempotent too', async () => {
    const create = () =>
      app.inject({ method: 'POST', url: '/v1/workloads', payload: { name: 'once', driver: 'process', command: ['/bin/true'] }, headers: { authorization: `Bearer ${KEY_A}`, 'idempotency-key': 'w1' } });
    const first = await create();
    const again = await create();
    expect(first.statusCode).toBe(201);
    expect(again.json().id).toBe(first.json().id);
    expect(scheduler.calls.filter((c) => c.method === 'createWorkload')).toHaveLength(1);
  });

  it('plans, lists, gets, stops, undeploys and purges (dry run passed through)', async () => {
    const headers = { authorization: `Bearer ${KEY_A}` };
    const plan = await app.inject({ method: 'POST', url: '/v1/services/plan', payload: TOML, headers: { ...headers, 'content-type': 'application/toml' } });
    expect(plan.json()).toMatchObject({ action: 'create', summary: ['plan for team-a'] });
    expect((await app.inject({ method: 'GET', url: '/v1/services', headers })).json().services).toHaveLength(1);
    expect((await app.inject({ method: 'GET', url: '/v1/services/shop', headers })).json()).toMatchObject({ name: 'shop', latestDeployment: null });
    expect((await app.inject({ method: 'GET', url: '/v1/services/Not_A_Name', headers })).json()).toMatchObject({ field: 'name' });
    expect((await app.inject({ method: 'POST', url: '/v1/services/shop/stop', headers })).json().state).toBe('stopped');
    expect((await app.inject({ method: 'DELETE', url: '/v1/services/shop', headers })).json().state).toBe('removed');
    const dry = await app.inject({ method: 'POST', url: '/v1/services/shop/purge?dry_run=true', headers });
    expect(dry.json()).toEqual({ dryRun: true, purged: [{ name: 'worker', reason: 'in no current definition' }], refused: [], serviceDeleted: false });
    await app.inject({ method: 'POST', url: '/v1/services/shop/purge', headers });
    expect(services.purges.map((p) => [p.teamId, p.name, p.dryRun])).toEqual([
      ['team-a', 'shop', true],
      ['team-a', 'shop', false],
    ]);
  });

  it('documents the routes in the OpenAPI document', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/services', '/v1/services/plan', '/v1/services/{name}', '/v1/services/{name}/stop', '/v1/services/{name}/purge']));
    expect(Object.keys(doc.paths['/v1/services'].post.requestBody.content).sort()).toEqual(['application/json', 'application/toml']);
    expect(doc.paths['/v1/services'].post.responses['422']).toBeDefined();
  });
});
