import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { silentLogger } from '@corral/logging';
import type { schedulerV1 } from '@corral/proto';
import { createCorralOperations } from '../operations/corral-operations';
import { createImageOperations } from '../operations/image-operations';
import { FakeHostImages } from '../testing/fake-host-images';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';
import { DEFAULT_REQUEST_TIMEOUTS, requestTimeoutOf } from './request-timeouts';

// The gateway's per-route request timeouts on a real socket, with the
// ordinary timeout configured very short: an ordinary request whose body
// trickles past it is cut with 408, while an upload that takes longer than
// it (but not the upload timeout) completes, and so does a long NDJSON
// answer to a quickly sent request.

const KEY = 'crl_teamaaaa_asecret';
const keys = { [KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' } };
const ORDINARY_MS = 300;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A scheduler whose pulls answer slowly: each line well after the previous one. */
class SlowPulls extends FakeHostImages {
  override async *pullImage(request: schedulerV1.PullHostImageRequest): AsyncIterable<schedulerV1.PullHostImageResponse> {
    for await (const message of super.pullImage(request)) {
      yield message;
      await sleep(ORDINARY_MS);
    }
  }
}

interface Sent {
  status: number;
  body: string;
}

/** Sends `parts` with `gapMs` between them; resolves with the answer, or status 0 if the connection was cut without one. */
function trickle(base: string, method: string, path: string, headers: Record<string, string>, parts: Buffer[], gapMs: number): Promise<Sent> {
  return new Promise((resolve) => {
    const req = httpRequest(`${base}${path}`, { method, headers: { authorization: `Bearer ${KEY}`, ...headers } });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    void (async () => {
      for (const [i, part] of parts.entries()) {
        if (i > 0) await sleep(gapMs);
        if (req.destroyed) return;
        req.write(part);
      }
      req.end();
    })();
  });
}

describe('gateway request timeouts', () => {
  let app: FastifyInstance;
  let base: string;

  beforeAll(async () => {
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler: new FakeScheduler(), hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator(keys) }),
      images: createImageOperations(new SlowPulls()),
      logger: silentLogger,
      bodyLimitBytes: 1024 * 1024,
      requestTimeoutMs: ORDINARY_MS,
      uploadTimeoutMs: 60_000,
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });
  afterAll(() => app.close());

  it('gives upload routes the upload timeout and every other route the ordinary one', () => {
    const timeouts = { requestTimeoutMs: 1, uploadTimeoutMs: 2 };
    expect(requestTimeoutOf({ longRequest: 'upload' }, timeouts)).toBe(2);
    expect(requestTimeoutOf({}, timeouts)).toBe(1);
    expect(requestTimeoutOf(undefined, timeouts)).toBe(1);
    expect(DEFAULT_REQUEST_TIMEOUTS.uploadTimeoutMs).toBeGreaterThan(DEFAULT_REQUEST_TIMEOUTS.requestTimeoutMs);
  });

  it('cuts an ordinary request whose body arrives slower than the ordinary timeout with 408', async () => {
    const body = Buffer.from(JSON.stringify({ name: 'slow', driver: 'process', command: ['sleep', '1'] }));
    const res = await trickle(base, 'POST', '/v1/workloads', { 'content-type': 'application/json', 'content-length': String(body.length) }, [body.subarray(0, 5), body.subarray(5)], ORDINARY_MS * 4);
    expect(res.status).toBe(408);
    expect(JSON.parse(res.body)).toMatchObject({ error: 'request_timeout' });
  });

  it('lets an image upload take longer than the ordinary timeout', async () => {
    const parts = Array.from({ length: 5 }, () => Buffer.alloc(100, 7));
    const res = await trickle(base, 'POST', '/v1/hosts/byoc-1/images?ref=localhost/app:1', { 'content-type': 'application/octet-stream', 'content-length': '500' }, parts, ORDINARY_MS);
    expect(res.status).toBe(200);
    expect(res.body.trim().split('\n').map((l) => JSON.parse(l)).at(-1)).toMatchObject({ type: 'result', bytes: 500 });
  });

  it('does not cut a long NDJSON answer', async () => {
    const body = Buffer.from(JSON.stringify({ ref: 'busybox' }));
    const res = await trickle(base, 'POST', '/v1/hosts/byoc-1/images/pull', { 'content-type': 'application/json', 'content-length': String(body.length) }, [body], 0);
    expect(res.status).toBe(200);
    expect(res.body.trim().split('\n').map((l) => JSON.parse(l)).at(-1)).toMatchObject({ type: 'result', ref: 'busybox' });
  });
});
