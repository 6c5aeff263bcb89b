import type { FastifyInstance } from 'fastify';
import { silentLogger } from '@corral/logging';
import { createCorralOperations } from '../operations/corral-operations';
import { createImageOperations } from '../operations/image-operations';
import { FakeHostImages } from '../testing/fake-host-images';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';

// POST /v1/hosts/{id}/images/pull through HTTP inject against a scripted
// scheduler: NDJSON progress and result, the request passed on with the
// caller's team and the credentials, validation naming the field, refusals
// before the first line as statuses and after it as an error line.

const KEY = 'crl_teamaaaa_asecret';
const keys = { [KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' } };

describe('REST image pull', () => {
  let app: FastifyInstance;
  let images: FakeHostImages;

  beforeEach(async () => {
    images = new FakeHostImages();
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler: new FakeScheduler(), hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator(keys) }),
      images: createImageOperations(images),
      logger: silentLogger,
      bodyLimitBytes: 1024 * 1024,
    });
  });
  afterEach(() => app.close());

  const pull = (hostId: string, body: unknown, key: string | null = KEY) =>
    app.inject({
      method: 'POST',
      url: `/v1/hosts/${hostId}/images/pull`,
      payload: JSON.stringify(body),
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    });
  const lines = (body: string) => body.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

  it('answers NDJSON progress lines, then the result', async () => {
    const res = await pull('byoc-1', { ref: '127.0.0.1:5000/corral/app:1' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/application\/x-ndjson/);
    expect(lines(res.body)).toEqual([
      { type: 'progress', phase: 'resolving', ref: '127.0.0.1:5000/corral/app:1', blobs: 0 },
      { type: 'progress', phase: 'copying-blob', ref: '127.0.0.1:5000/corral/app:1', digest: `sha256:${'1'.repeat(64)}`, blobs: 1 },
      { type: 'result', imageId: 'd'.repeat(64), ref: '127.0.0.1:5000/corral/app:1', digest: `sha256:${'2'.repeat(64)}` },
    ]);
    expect(images.pulls).toEqual([{ hostId: 'byoc-1', teamId: 'team-a', image: { driver: 'podman', ref: '127.0.0.1:5000/corral/app:1', credentials: undefined } }]);
  });

  it('passes credentials on to the scheduler and never echoes them', async () => {
    const res = await pull('byoc-1', { ref: 'busybox', credentials: { username: 'corral', password: 'hunter2-secret' } });
    expect(res.statusCode).toBe(200);
    expect(res.body).not.toContain('hunter2-secret');
    expect(images.pulls[0]?.image?.credentials).toEqual({ username: 'corral', password: 'hunter2-secret' });
  });

  it('names a malformed or missing ref and bad credentials in the 400, before the scheduler is asked', async () => {
    for (const body of [{ ref: 'Not A Ref' }, {}, { ref: '-q' }, { ref: `busybox@sha256:abc` }]) {
      const res = await pull('byoc-1', body);
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ error: 'invalid_argument', field: 'ref' });
    }
    const badUser = await pull('byoc-1', { ref: 'busybox', credentials: { username: 'a:b', password: 'p' } });
    expect(badUser.statusCode).toBe(400);
    expect(badUser.json()).toMatchObject({ field: 'credentials.username' });
    const noPassword = await pull('byoc-1', { ref: 'busybox', credentials: { username: 'a' } });
    expect(noPassword.statusCode).toBe(400);
    expect(JSON.stringify(noPassword.json())).toContain('password');
    const extra = await pull('byoc-1', { ref: 'busybox', tls: false });
    expect(extra.statusCode).toBe(400);
    expect(images.pulls).toEqual([]);
  });

  it('answers a refusal before the first line with its status, and one after it as the last line', async () => {
    expect((await pull('nope', { ref: 'busybox' })).statusCode).toBe(404);
    const missing = await pull('byoc-1', { ref: 'busybox:missing' });
    expect(missing.statusCode).toBe(200);
    expect(lines(missing.body).at(-1)).toMatchObject({ type: 'error', error: 'not_found' });
  });

  it('needs an API key', async () => {
    expect((await pull('byoc-1', { ref: 'busybox' }, null)).statusCode).toBe(401);
    expect(images.pulls).toEqual([]);
  });

  it('is in the OpenAPI document with its body schema', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { required: string[]; properties: Record<string, unknown> } }> } }>> };
    const route = doc.paths['/v1/hosts/{id}/images/pull']?.post;
    expect(route?.requestBody?.content['application/json']?.schema).toMatchObject({ required: ['ref'], properties: { ref: expect.anything(), credentials: expect.anything() } });
  });
});
