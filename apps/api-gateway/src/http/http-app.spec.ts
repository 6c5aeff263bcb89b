import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { InvalidArgumentError, UnavailableError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { HostStatus } from '@corral/proto';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';

const ADMIN_KEY = 'crl_admin000_adminsecret';
const TEAM_A_KEY = 'crl_teamaaaa_asecret';
const TEAM_B_KEY = 'crl_teambbbb_bsecret';
const TEAMLESS_KEY = 'crl_nobody00_nsecret';

const keys = {
  [ADMIN_KEY]: { keyId: 'k-admin', admin: true, teamId: null },
  [TEAM_A_KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' },
  [TEAM_B_KEY]: { keyId: 'k-b', admin: false, teamId: 'team-b' },
  [TEAMLESS_KEY]: { keyId: 'k-n', admin: false, teamId: null },
};

const auth = (key: string) => ({ authorization: `Bearer ${key}` });
const validSpec = { name: 'web-1', driver: 'process', command: ['sleep', '60'], env: { GREETING: 'hunter2-value' } };

describe('REST adapter', () => {
  let app: FastifyInstance;
  let scheduler: FakeScheduler;
  let hosts: FakeHostRegistry;
  let ready: Record<string, boolean>;

  beforeEach(async () => {
    scheduler = new FakeScheduler();
    hosts = new FakeHostRegistry();
    ready = { database: true, scheduler: true };
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler, hostRegistry: hosts, authenticate: fakeAuthenticator(keys) }),
      logger: silentLogger,
      bodyLimitBytes: 1024 * 1024,
      readiness: async () => ready,
    });
  });
  afterEach(() => app.close());

  const post = (url: string, payload: unknown, key = TEAM_A_KEY) => app.inject({ method: 'POST', url, headers: auth(key), payload: payload as object });
  const get = (url: string, key = TEAM_A_KEY) => app.inject({ method: 'GET', url, headers: auth(key) });

  describe('workloads', () => {
    it('creates a workload for the caller\'s team, without echoing env values', async () => {
      const res = await post('/v1/workloads', validSpec);
      expect(res.statusCode).toBe(201);
      const body = res.json();
      expect(body).toEqual({
        id: expect.any(String),
        name: 'web-1',
        teamId: 'team-a',
        driver: 'process',
        command: ['sleep', '60'],
        envKeys: ['GREETING'],
        state: 'pending',
        hostId: null,
        exitCode: null,
        reason: null,
        createdAt: '2026-01-01T00:00:00.000Z',
        updatedAt: '2026-01-01T00:00:00.000Z',
        image: null,
        resources: { vcpus: null, memoryMb: null },
        routes: [],
        ports: [],
        vm: null,
      });
      expect(res.headers.location).toBe(`/v1/workloads/${body.id}`);
      expect(res.body).not.toContain('hunter2');
      expect(scheduler.calls.at(-1)).toMatchObject({ method: 'createWorkload', request: { teamId: 'team-a', env: { GREETING: 'hunter2-value' } } });
    });

    it('gets, lists, stops and reads logs, scoped to the team', async () => {
      const mine = scheduler.add({ teamId: 'team-a', name: 'mine', hostId: 'h1' });
      const theirs = scheduler.add({ teamId: 'team-b', name: 'theirs' });
      scheduler.logs.set(mine.id, Buffer.from('line 1\nline 2\n'));

      expect((await get(`/v1/workloads/${mine.id}`)).json()).toMatchObject({ id: mine.id, state: 'running', hostId: 'h1' });
      expect((await get(`/v1/workloads/${theirs.id}`)).statusCode).toBe(404);
      expect((await get('/v1/workloads')).json().workloads.map((w: { name: string }) => w.name)).toEqual(['mine']);
      expect((await get('/v1/workloads', ADMIN_KEY)).json().workloads.map((w: { name: string }) => w.name)).toEqual(['mine', 'theirs']);

      const logs = await get(`/v1/workloads/${mine.id}/logs?tail=7`);
      expect(logs.statusCode).toBe(200);
      expect(logs.headers['content-type']).toMatch(/^text\/plain/);
      expect(logs.headers['x-corral-logs-truncated']).toBe('true');
      expect(logs.body).toBe('line 2\n');
      expect((await get(`/v1/workloads/${theirs.id}/logs`)).statusCode).toBe(404);

      const first = await app.inject({ method: 'DELETE', url: `/v1/workloads/${mine.id}`, headers: auth(TEAM_A_KEY) });
      expect(first.statusCode).toBe(202);
      expect(first.json()).toMatchObject({ state: 'stopping', exitCode: null });
      const second = await app.inject({ method: 'DELETE', url: `/v1/workloads/${mine.id}`, headers: auth(TEAM_A_KEY) });
      expect(second.statusCode).toBe(200);
      expect(second.json()).toMatchObject({ state: 'stopped', exitCode: 143 });
      const third = await app.inject({ method: 'DELETE', url: `/v1/workloads/${mine.id}`, headers: auth(TEAM_A_KEY) });
      expect(third.statusCode).toBe(200);
      expect((await app.inject({ method: 'DELETE', url: `/v1/workloads/${theirs.id}`, headers: auth(TEAM_A_KEY) })).statusCode).toBe(404);
    });

    it('DELETE ?purge=true tears the workload down (forced, so a live one is stopped first) and answers it retired; plain DELETE still only stops', async () => {
      const mine = scheduler.add({ teamId: 'team-a', name: 'purge-me', hostId: 'h1', state: 'running' });
      const theirs = scheduler.add({ teamId: 'team-b', name: 'not-yours', hostId: 'h1', state: 'stopped' });
      const purge = (id: string, query = '?purge=true', key = TEAM_A_KEY) => app.inject({ method: 'DELETE', url: `/v1/workloads/${id}${query}`, headers: auth(key) });

      const res = await purge(mine.id);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ id: mine.id, state: 'retired', ports: [] });
      expect(scheduler.calls.at(-1)).toMatchObject({ method: 'destroyWorkload', request: { id: mine.id, teamId: 'team-a', force: true } });
      // Idempotent.
      expect((await purge(mine.id)).json()).toMatchObject({ state: 'retired' });
      expect((await purge(theirs.id)).statusCode).toBe(404);
      expect(scheduler.workloads.get(theirs.id)?.state).toBe('INSTANCE_STATE_STOPPED');

      const other = scheduler.add({ teamId: 'team-a', name: 'stop-only', hostId: 'h1', state: 'running' });
      expect((await purge(other.id, '?purge=false')).json()).toMatchObject({ state: 'stopping' });
      expect(scheduler.calls.at(-1)).toMatchObject({ method: 'stopWorkload' });
      const bad = await purge(other.id, '?purge=sometimes');
      expect(bad.statusCode).toBe(400);
      expect(bad.json()).toMatchObject({ field: 'purge' });
    });

    it('creates a workload with image, resources, routes and vm, and shows its host ports', async () => {
      const res = await post('/v1/workloads', {
        name: 'web',
        driver: 'podman',
        image: 'localhost/busybox:latest',
        resources: { vcpus: 2, memoryMb: 256 },
        routes: [{ name: 'http', port: 8080 }, { name: 'dns', port: 53, protocol: 'udp' }],
      });
      expect(res.statusCode).toBe(201);
      expect(scheduler.calls.at(-1)).toMatchObject({
        method: 'createWorkload',
        request: {
          command: [],
          image: 'localhost/busybox:latest',
          resources: { vcpus: 2, memoryMb: 256 },
          routes: [
            { name: 'http', port: 8080, protocol: 'tcp' },
            { name: 'dns', port: 53, protocol: 'udp' },
          ],
        },
      });
      expect(res.json()).toMatchObject({
        image: 'localhost/busybox:latest',
        resources: { vcpus: 2, memoryMb: 256 },
        routes: [
          { name: 'http', port: 8080, protocol: 'tcp' },
          { name: 'dns', port: 53, protocol: 'udp' },
        ],
        ports: [],
        vm: null,
      });

      const running = scheduler.add({
        teamId: 'team-a',
        routes: [{ name: 'http', port: 8080, protocol: 'tcp' }],
        ports: [{ name: 'http', guestPort: 8080, hostPort: 20000, protocol: 'tcp' }],
      });
      expect((await get(`/v1/workloads/${running.id}`)).json().ports).toEqual([{ name: 'http', guestPort: 8080, hostPort: 20000, protocol: 'tcp' }]);

      const vm = await post('/v1/workloads', { name: 'vm', driver: 'qemu', vm: { mode: 'microvm', kernel: '/boot/vmlinuz', kernelArgs: 'console=ttyS0' }, resources: { memoryMb: 128 } });
      expect(vm.statusCode).toBe(201);
      expect(vm.json()).toMatchObject({ image: null, resources: { vcpus: null, memoryMb: 128 }, vm: { mode: 'microvm', kernel: '/boot/vmlinuz', initrd: null, kernelArgs: 'console=ttyS0', rootDisk: null } });

      // A root disk cloned from a base image on the host: an absolute path, microvm only.
      const disked = await post('/v1/workloads', { name: 'vm-disk', driver: 'qemu', vm: { mode: 'microvm', kernel: '/boot/vmlinuz', rootDisk: '/images/base.qcow2' } });
      expect(disked.statusCode).toBe(201);
      expect(disked.json().vm).toMatchObject({ rootDisk: '/images/base.qcow2' });
      const relative = await post('/v1/workloads', { name: 'vm-disk', driver: 'qemu', vm: { mode: 'microvm', kernel: '/boot/vmlinuz', rootDisk: 'base.qcow2' } });
      expect(relative.statusCode).toBe(400);
      expect(relative.json().message).toMatch(/rootDisk/);
    });

    it('pauses and resumes a workload: 200 with the workload, idempotent; 409 when its state does not allow it', async () => {
      const w = scheduler.add({ teamId: 'team-a' });
      const paused = await post(`/v1/workloads/${w.id}/pause`, undefined);
      expect(paused.statusCode).toBe(200);
      expect(paused.json()).toMatchObject({ id: w.id, state: 'paused' });
      expect((await post(`/v1/workloads/${w.id}/pause`, undefined)).json()).toMatchObject({ state: 'paused' });
      const resumed = await post(`/v1/workloads/${w.id}/resume`, undefined);
      expect(resumed.statusCode).toBe(200);
      expect(resumed.json()).toMatchObject({ state: 'running' });
      expect(scheduler.calls.filter((c) => c.method === 'resumeWorkload').at(-1)?.request).toEqual({ id: w.id, teamId: 'team-a' });

      const stopped = scheduler.add({ teamId: 'team-a', state: 'stopped' });
      const refused = await post(`/v1/workloads/${stopped.id}/pause`, undefined);
      expect(refused.statusCode).toBe(409);
      expect(refused.json()).toEqual({ error: 'failed_precondition', message: 'the resource is not in a state that allows this operation' });
      const theirs = scheduler.add({ teamId: 'team-b' });
      expect((await post(`/v1/workloads/${theirs.id}/pause`, undefined)).statusCode).toBe(404);
      expect((await post('/v1/workloads/..%2Fx/resume', undefined)).statusCode).toBe(400);
      const json = await app.inject({ method: 'POST', url: `/v1/workloads/${w.id}/pause`, headers: { ...auth(TEAM_A_KEY), 'content-type': 'application/json' }, payload: '' });
      expect(json.statusCode).toBe(200);
    });

    it('lets an admin key create platform workloads', async () => {
      const res = await post('/v1/workloads', validSpec, ADMIN_KEY);
      expect(res.statusCode).toBe(201);
      expect(res.json().teamId).toBeNull();
      expect(scheduler.calls.at(-1)?.request).toMatchObject({ teamId: '' });
    });

    it('refuses a key that is neither admin nor in a team, rather than showing everything', async () => {
      scheduler.add({ teamId: 'team-a' });
      const res = await get('/v1/workloads', TEAMLESS_KEY);
      expect(res.statusCode).toBe(403);
      expect(res.json()).toEqual({ error: 'permission_denied', message: 'permission denied' });
      expect(scheduler.calls).toHaveLength(0);
    });
  });

  describe('garbage in', () => {
    const cases: [string, unknown, string | undefined, RegExp][] = [
      ['a body that is not an object', ['sleep'], undefined, /body must be of type object/],
      ['a missing command', { name: 'w', driver: 'process' }, 'command', /command is required/],
      ['a command that is a string', { ...validSpec, command: 'sleep 60' }, 'command', /command must be of type array/],
      ['an empty command', { ...validSpec, command: [] }, 'command', /command must not be empty/],
      ['an argument that is a number', { ...validSpec, command: ['sleep', 60] }, 'command[1]', /command\[1\] must be of type string/],
      ['an unknown driver', { ...validSpec, driver: 'docker' }, 'driver', /driver must be one of process, podman, qemu/],
      ['an additional property', { ...validSpec, privileged: true }, 'privileged', /privileged is not a known field/],
      ['an env value that is not a string', { ...validSpec, env: { FOO: 1 } }, 'env.FOO', /env.FOO must be of type string/],
      ['an env name with a dash', { ...validSpec, env: { 'BAD-NAME': 'x' } }, 'env.BAD-NAME', /not allowed/],
      ['a name that is too long', { ...validSpec, name: 'x'.repeat(64) }, 'name', /at most 63 characters/],
      ['a name with capitals (domain rule)', { ...validSpec, name: 'Web' }, 'name', /lowercase/],
      ['an empty program (domain rule)', { ...validSpec, command: [''] }, 'command[0]', /program must not be empty/],
      ['a NUL byte in an argument (domain rule)', { ...validSpec, command: ['sh', 'a\0b'] }, 'command[1]', /NUL/],
      ['null', null, undefined, /body must be of type object/],
      ['a podman workload without an image (domain rule)', { name: 'w', driver: 'podman' }, 'image', /needs an image/],
      ['a qemu workload without vm (domain rule)', { name: 'w', driver: 'qemu' }, 'vm.mode', /vm.mode/],
      ['a microvm without a kernel (domain rule)', { name: 'w', driver: 'qemu', vm: { mode: 'microvm' } }, 'vm.kernel', /vm.kernel/],
      ['an unknown vm mode', { name: 'w', driver: 'qemu', vm: { mode: 'firecracker' } }, 'vm.mode', /vm.mode must be one of microvm, unikernel/],
      ['an image for the process driver (domain rule)', { ...validSpec, image: 'busybox' }, 'image', /runs no image/],
      ['a route port of 0', { ...validSpec, routes: [{ name: 'a', port: 80 }, { name: 'b', port: 0 }] }, 'routes[1].port', /routes\[1\].port must be >= 1/],
      ['a route port above 65535', { ...validSpec, routes: [{ name: 'a', port: 65536 }] }, 'routes[0].port', /must be <= 65535/],
      ['a route name with capitals', { ...validSpec, routes: [{ name: 'HTTP', port: 80 }] }, 'routes[0].name', /invalid format/],
      ['a route name used twice (domain rule)', { ...validSpec, routes: [{ name: 'a', port: 80 }, { name: 'a', port: 81 }] }, 'routes[1].name', /used twice/],
      ['a route without a port', { ...validSpec, routes: [{ name: 'a' }] }, 'routes[0].port', /is required/],
      ['an unknown route protocol', { ...validSpec, routes: [{ name: 'a', port: 80, protocol: 'sctp' }] }, 'routes[0].protocol', /must be one of tcp, udp/],
      ['too little memory', { ...validSpec, resources: { memoryMb: 1 } }, 'resources.memoryMb', /must be >= 16/],
      ['fractional vcpus', { ...validSpec, resources: { vcpus: 0.5 } }, 'resources.vcpus', /must be an integer/],
      ['an unknown resource', { ...validSpec, resources: { gpus: 1 } }, 'resources.gpus', /not a known field/],
    ];
    it.each(cases)('rejects %s with 400 naming the field', async (_what, payload, field, message) => {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/workloads',
        headers: { ...auth(TEAM_A_KEY), 'content-type': 'application/json' },
        payload: JSON.stringify(payload),
      });
      expect(res.statusCode).toBe(400);
      const body = res.json();
      expect(body.error).toBe('invalid_argument');
      expect(body.message).toMatch(message);
      expect(body.field).toBe(field);
      expect(scheduler.calls.filter((c) => c.method === 'createWorkload')).toHaveLength(0);
    });

    it('rejects malformed JSON with 400', async () => {
      const res = await app.inject({ method: 'POST', url: '/v1/workloads', headers: { ...auth(TEAM_A_KEY), 'content-type': 'application/json' }, payload: '{"name": "w",' });
      expect(res.statusCode).toBe(400);
      expect(res.json()).toEqual({ error: 'invalid_argument', message: 'the request body is not valid JSON' });
    });

    it('rejects prototype pollution attempts with 400', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/workloads',
        headers: { ...auth(TEAM_A_KEY), 'content-type': 'application/json' },
        payload: '{"name":"w","driver":"process","command":["x"],"__proto__":{"admin":true}}',
      });
      expect(res.statusCode).toBe(400);
    });

    it('treats an empty JSON body as no body: 400 where one is required, fine where it is not', async () => {
      const json = { ...auth(TEAM_A_KEY), 'content-type': 'application/json' };
      const res = await app.inject({ method: 'POST', url: '/v1/workloads', headers: json, payload: '' });
      expect(res.statusCode).toBe(400);
      expect(res.json()).toEqual({ error: 'invalid_argument', message: 'the body must be of type object' });
      expect((await app.inject({ method: 'POST', url: '/v1/hosts/registration-tokens', headers: json, payload: '' })).statusCode).toBe(201);
      const w = scheduler.add({ teamId: 'team-a' });
      expect((await app.inject({ method: 'DELETE', url: `/v1/workloads/${w.id}`, headers: json, payload: '' })).statusCode).toBe(202);
    });

    it('rejects over-long ids: 400 naming it, 414 when absurdly long', async () => {
      const res = await get(`/v1/workloads/${'a'.repeat(300)}`);
      expect(res.statusCode).toBe(414);
      expect(res.json()).toEqual({ error: 'invalid_argument', message: 'the request is malformed' });
      expect((await get(`/v1/workloads/${'a'.repeat(129)}`)).json()).toMatchObject({ field: 'id', message: 'id must have at most 128 characters' });
    });

    it('refuses JSON with constructor poisoning', async () => {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/workloads',
        headers: { ...auth(TEAM_A_KEY), 'content-type': 'application/json' },
        payload: '{"constructor":{"prototype":{"admin":true}}}',
      });
      expect(res.statusCode).toBe(400);
    });

    it.each(['text/plain', 'application/x-www-form-urlencoded', 'application/xml'])('rejects a %s body with 415', async (type) => {
      const res = await app.inject({ method: 'POST', url: '/v1/workloads', headers: { ...auth(TEAM_A_KEY), 'content-type': type }, payload: 'name=w' });
      expect(res.statusCode).toBe(415);
      expect(res.json()).toEqual({ error: 'unsupported_media_type', message: 'the request body must be application/json' });
    });

    it('rejects a 10 MB body with 413', async () => {
      const huge = JSON.stringify({ ...validSpec, command: ['echo', 'x'.repeat(10 * 1024 * 1024)] });
      const res = await app.inject({ method: 'POST', url: '/v1/workloads', headers: { ...auth(TEAM_A_KEY), 'content-type': 'application/json' }, payload: huge });
      expect(res.statusCode).toBe(413);
      expect(res.json()).toEqual({ error: 'payload_too_large', message: 'the request body is too large' });
    });

    it('rejects bad path and query parameters with 400', async () => {
      const badId = await get('/v1/workloads/..%2F..%2Fetc');
      expect(badId.statusCode).toBe(400);
      expect(badId.json()).toMatchObject({ error: 'invalid_argument', field: 'id' });
      const w = scheduler.add({ teamId: 'team-a' });
      const badTail = await get(`/v1/workloads/${w.id}/logs?tail=lots`);
      expect(badTail.statusCode).toBe(400);
      expect(badTail.json()).toMatchObject({ field: 'tail', message: 'tail must be an integer' });
      const unknownQuery = await get(`/v1/workloads/${w.id}/logs?since=1`);
      expect(unknownQuery.json()).toMatchObject({ field: 'since' });
      expect((await get(`/v1/workloads/${w.id}/logs?follow=maybe`)).json()).toMatchObject({ field: 'follow' });
      expect((await get(`/v1/workloads/${w.id}/logs?tail=0`)).statusCode).toBe(400);
    });

    it('answers unknown routes and methods with a JSON 404', async () => {
      for (const res of [await get('/v1/nope'), await app.inject({ method: 'PATCH', url: '/v1/workloads' }), await app.inject({ method: 'GET', url: '/' })]) {
        expect(res.statusCode).toBe(404);
        expect(res.json()).toEqual({ error: 'not_found', message: 'no such route' });
      }
    });

    it('answers any JSON value or byte string with a 201 or a 4xx JSON error, never a 5xx', async () => {
      const bodies = fc.oneof(
        fc.json(),
        fc.jsonValue().map((v) => JSON.stringify({ ...validSpec, command: v })),
        fc.jsonValue().map((v) => JSON.stringify({ ...validSpec, env: v })),
        fc.dictionary(fc.string(), fc.jsonValue()).map((v) => JSON.stringify({ ...validSpec, ...v })),
        fc.string(),
      );
      await fc.assert(
        fc.asyncProperty(bodies, async (payload) => {
          const res = await app.inject({ method: 'POST', url: '/v1/workloads', headers: { ...auth(TEAM_A_KEY), 'content-type': 'application/json' }, payload });
          expect([201, 400]).toContain(res.statusCode);
          const body = res.json();
          if (res.statusCode === 400) expect(body).toEqual({ error: 'invalid_argument', message: expect.any(String), ...(body.field === undefined ? {} : { field: expect.any(String) }) });
        }),
        { numRuns: 300 },
      );
    });

    it('survives a malformed URL', async () => {
      const res = await get('/v1/workloads/%E0%A4%A');
      expect(res.statusCode).toBe(400);
      expect(res.json().error).toBe('invalid_argument');
      expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    });
  });

  describe('authentication', () => {
    it.each([
      ['no Authorization header', {}],
      ['an unknown key', auth('crl_unknown0_secret')],
      ['a Basic credential', { authorization: 'Basic dXNlcjpwYXNz' }],
      ['an empty bearer', { authorization: 'Bearer ' }],
      ['two tokens', { authorization: `Bearer ${TEAM_A_KEY} extra` }],
    ])('refuses %s with 401', async (_what, headers) => {
      const res = await app.inject({ method: 'GET', url: '/v1/workloads', headers });
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual({ error: 'unauthenticated', message: 'authentication required' });
      expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
    });

    it('authenticates before reading the body, so anonymous garbage gets 401, not 400', async () => {
      const res = await app.inject({ method: 'POST', url: '/v1/workloads', headers: { 'content-type': 'application/json' }, payload: '{bad' });
      expect(res.statusCode).toBe(401);
    });

    it('says who the key belongs to', async () => {
      expect((await get('/v1/whoami')).json()).toEqual({ keyId: 'k-a', admin: false, teamId: 'team-a' });
      expect((await get('/v1/whoami', ADMIN_KEY)).json()).toEqual({ keyId: 'k-admin', admin: true, teamId: null });
    });

    it('leaves health, readiness and the API description open', async () => {
      expect((await app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
      expect((await app.inject({ method: 'GET', url: '/readyz' })).json()).toEqual({ status: 'ready', checks: { database: 'ok', scheduler: 'ok' } });
      ready.scheduler = false;
      const notReady = await app.inject({ method: 'GET', url: '/readyz' });
      expect(notReady.statusCode).toBe(503);
      expect(notReady.json()).toEqual({ status: 'not_ready', checks: { database: 'ok', scheduler: 'failing' } });
      expect((await app.inject({ method: 'GET', url: '/openapi.json' })).statusCode).toBe(200);
      const docs = await app.inject({ method: 'GET', url: '/docs/' });
      expect(docs.statusCode).toBe(200);
      expect(docs.body).toContain('swagger-ui');
    });
  });

  describe('hosts', () => {
    it('shows platform hosts and the team\'s own, with lowercase status', async () => {
      const platform = hosts.add({ name: 'p1' });
      const own = hosts.add({ name: 'a1', teamId: 'team-a', status: HostStatus.HOST_STATUS_DRAINING });
      const other = hosts.add({ name: 'b1', teamId: 'team-b' });
      const list = (await get('/v1/hosts')).json();
      expect(list.hosts.map((h: { name: string }) => h.name)).toEqual(['p1', 'a1']);
      expect(list.hosts[1]).toEqual({
        id: own.id,
        name: 'a1',
        status: 'draining',
        teamId: 'team-a',
        resources: { capacity: { cpuMillis: 2000, memoryMb: 4096, diskMb: 10240 }, usage: { cpuMillis: 0, memoryMb: 0, diskMb: 0 } },
        drivers: [{ name: 'process', healthy: true, version: '1' }],
        labels: {},
        lastHeartbeatAt: '2026-01-01T00:00:00.000Z',
        createdAt: '2026-01-01T00:00:00.000Z',
      });
      expect((await get(`/v1/hosts/${platform.id}`)).json().status).toBe('online');
      expect((await get(`/v1/hosts/${other.id}`)).statusCode).toBe(404);
      expect((await get(`/v1/hosts/${other.id}`, ADMIN_KEY)).statusCode).toBe(200);
      expect((await get('/v1/hosts', ADMIN_KEY)).json().hosts).toHaveLength(3);
    });

    it('creates registration tokens: platform ones for admins, team ones for team keys', async () => {
      const res = await post('/v1/hosts/registration-tokens', { ttlSeconds: 600, description: 'rack 4' });
      expect(res.statusCode).toBe(201);
      expect(res.json()).toEqual({ id: expect.any(String), token: expect.stringMatching(/^crt_/), expiresAt: expect.any(String) });
      expect(hosts.tokens.at(-1)).toEqual({ ttlSeconds: 600, teamId: 'team-a', description: 'rack 4' });

      const bare = await app.inject({ method: 'POST', url: '/v1/hosts/registration-tokens', headers: auth(ADMIN_KEY) });
      expect(bare.statusCode).toBe(201);
      expect(hosts.tokens.at(-1)).toEqual({ ttlSeconds: 3600, teamId: '', description: '' });

      const bad = await post('/v1/hosts/registration-tokens', { ttlSeconds: 5 });
      expect(bad.statusCode).toBe(400);
      expect(bad.json()).toMatchObject({ field: 'ttlSeconds' });
    });
  });

  describe('backend failures', () => {
    it('hides backend text behind a fixed 500', async () => {
      scheduler.failNext(new Error('ERROR: relation "workloads" does not exist; SELECT * FROM workloads WHERE team_id = $1'));
      const res = await get('/v1/workloads');
      expect(res.statusCode).toBe(500);
      expect(res.json()).toEqual({ error: 'internal', message: 'internal error' });
      expect(res.body).not.toMatch(/SELECT|relation|workloads"/);
    });

    it('maps typed backend errors to fixed messages', async () => {
      scheduler.failNext(new UnavailableError('connect ECONNREFUSED 10.1.2.3:50051'));
      const res = await get('/v1/workloads');
      expect(res.statusCode).toBe(503);
      expect(res.json()).toEqual({ error: 'unavailable', message: 'service unavailable' });
    });

    it('passes a backend validation error through with its field', async () => {
      scheduler.failNext(new InvalidArgumentError('driver qemu is not enabled on any host', { field: 'driver' }));
      const res = await post('/v1/workloads', validSpec);
      expect(res.statusCode).toBe(400);
      expect(res.json()).toEqual({ error: 'invalid_argument', message: 'driver qemu is not enabled on any host', field: 'driver' });
    });
  });
});
