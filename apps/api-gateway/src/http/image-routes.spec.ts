import type { FastifyInstance } from 'fastify';
import { silentLogger } from '@corral/logging';
import { createCorralOperations } from '../operations/corral-operations';
import { createImageOperations } from '../operations/image-operations';
import { FakeHostImages } from '../testing/fake-host-images';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';

// POST/GET /v1/hosts/{id}/images through HTTP inject against a scripted
// scheduler: NDJSON progress and result, limits, validation, team scope.

const KEY = 'crl_teamaaaa_asecret';
const keys = { [KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' } };
const LIMIT = 1000;

describe('REST host images', () => {
  let app: FastifyInstance;
  let images: FakeHostImages;

  beforeEach(async () => {
    images = new FakeHostImages();
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler: new FakeScheduler(), hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator(keys) }),
      images: createImageOperations(images),
      imageMaxBytes: LIMIT,
      logger: silentLogger,
      bodyLimitBytes: 1024 * 1024,
    });
  });
  afterEach(() => app.close());

  const post = (url: string, payload: Buffer | string) =>
    app.inject({ method: 'POST', url, payload, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/octet-stream' } });

  it('streams the archive up and answers NDJSON progress lines, then the result', async () => {
    const res = await post('/v1/hosts/byoc-1/images?ref=localhost/app:1', Buffer.alloc(300, 1));
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/application\/x-ndjson/);
    const lines = res.body.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[lines.length - 1]).toEqual({ type: 'result', imageId: 'f'.repeat(64), ref: 'localhost/app:1', bytes: 300 });
    expect(lines.slice(0, -1).every((l) => l.type === 'progress')).toBe(true);
    expect(lines[lines.length - 2]).toEqual({ type: 'progress', phase: 'importing', receivedBytes: 300, consumedBytes: 300, totalBytes: 300 });
    expect(images.headers[0]).toEqual({ hostId: 'byoc-1', teamId: 'team-a', image: { driver: 'podman', ref: 'localhost/app:1', format: 'rootfs-tar', sizeBytes: 300 } });
  });

  it('passes the format through', async () => {
    const res = await post('/v1/hosts/byoc-1/images?ref=localhost/app:2&format=oci-archive', 'x');
    expect(res.statusCode).toBe(200);
    expect(images.headers[0]?.image?.format).toBe('oci-archive');
  });

  it('refuses an archive over the limit with 413, before anything reaches the scheduler', async () => {
    const res = await post('/v1/hosts/byoc-1/images?ref=localhost/app:1', Buffer.alloc(LIMIT + 1));
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ error: 'payload_too_large' });
    expect(images.headers).toEqual([]);
  });

  it('names a bad or missing ref and a bad format in the 400', async () => {
    for (const url of ['/v1/hosts/byoc-1/images?ref=Not%20A%20Ref', '/v1/hosts/byoc-1/images']) {
      const res = await post(url, 'x');
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ error: 'invalid_argument', field: 'ref' });
    }
    const bad = await post('/v1/hosts/byoc-1/images?ref=localhost/app:1&format=zip', 'x');
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ field: 'format' });
    expect(images.headers).toEqual([]);
  });

  it('answers a refusal before the first line with its status', async () => {
    const res = await post('/v1/hosts/nope/images?ref=localhost/app:1', 'x');
    expect(res.statusCode).toBe(404);
  });

  it('needs an API key', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/hosts/byoc-1/images?ref=localhost/app:1', payload: 'x', headers: { 'content-type': 'application/octet-stream' } });
    expect(res.statusCode).toBe(401);
    expect(images.headers).toEqual([]);
  });

  it("lists a host's images with the caller's team", async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/hosts/byoc-1/images', headers: { authorization: `Bearer ${KEY}` } });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ images: [{ imageId: 'e'.repeat(64), refs: ['localhost/app:1'], sizeBytes: 12, createdAt: '2026-01-02T03:04:05.000Z' }] });
    expect(images.listed).toEqual([{ hostId: 'byoc-1', teamId: 'team-a', driver: 'podman' }]);
  });
});
