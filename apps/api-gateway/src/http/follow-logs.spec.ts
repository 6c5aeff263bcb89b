import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { instanceStateToProto } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';

// GET /v1/workloads/{id}/logs?follow=true over a real socket: a chunked
// text/plain response that streams until the workload ends, and whose
// upstream stream is cancelled when the client disconnects.

const KEY = 'crl_teamaaaa_asecret';
const OTHER_KEY = 'crl_teambbbb_bsecret';
const keys = {
  [KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' },
  [OTHER_KEY]: { keyId: 'k-b', admin: false, teamId: 'team-b' },
};

describe('REST log following', () => {
  let app: FastifyInstance;
  let scheduler: FakeScheduler;
  let base: string;

  beforeEach(async () => {
    scheduler = new FakeScheduler();
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler, hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator(keys) }),
      logger: silentLogger,
      bodyLimitBytes: 1024 * 1024,
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  });
  afterEach(() => app.close());

  const append = (id: string, text: string) => scheduler.logs.set(id, Buffer.concat([scheduler.logs.get(id) ?? Buffer.alloc(0), Buffer.from(text)]));

  it('streams the tail and new output until the workload ends, then ends the response', async () => {
    const w = scheduler.add({ teamId: 'team-a', state: 'running' });
    append(w.id, 'old 1\nold 2\n');
    const res = await fetch(`${base}/v1/workloads/${w.id}/logs?follow=true&tail=6`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(res.headers.get('transfer-encoding')).toBe('chunked');
    if (!res.body) throw new Error('no body');
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const readUntil = async (want: string) => {
      while (!text.includes(want)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`stream ended before ${want}`);
        text += decoder.decode(value, { stream: true });
      }
    };
    await readUntil('old 2\n');
    expect(text).toBe('old 2\n');
    append(w.id, 'new 1\n');
    await readUntil('new 1\n');
    append(w.id, 'last\n');
    w.state = instanceStateToProto('stopped');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    expect(text).toBe('old 2\nnew 1\nlast\n');
    expect(scheduler.calls.find((c) => c.method === 'streamWorkloadLogs')?.request).toMatchObject({ id: w.id, teamId: 'team-a', tailBytes: 6, follow: true });
    await waitFor(() => scheduler.openStreams === 0);
  });

  it('cancels the upstream stream when the client disconnects', async () => {
    const w = scheduler.add({ teamId: 'team-a', state: 'running' });
    append(w.id, 'hello\n');
    // node:http rather than fetch: undici opens a spare connection after an abort.
    const req = request(`${base}/v1/workloads/${w.id}/logs?follow=true`, { headers: { authorization: `Bearer ${KEY}` } });
    const first = await new Promise<string>((resolve, reject) => {
      req.once('error', reject);
      req.once('response', (res) => res.once('data', (chunk: Buffer) => resolve(chunk.toString())));
      req.end();
    });
    expect(first).toBe('hello\n');
    expect(scheduler.openStreams).toBe(1);
    req.once('error', () => undefined);
    req.destroy();
    await waitFor(() => scheduler.openStreams === 0);
    // afterEach's app.close() would hang on a response left open.
  });

  it('answers another team\'s workload with 404 before streaming anything', async () => {
    const w = scheduler.add({ teamId: 'team-a', state: 'running' });
    const res = await fetch(`${base}/v1/workloads/${w.id}/logs?follow=true`, { headers: { authorization: `Bearer ${OTHER_KEY}` } });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: 'not_found' });
    expect(scheduler.openStreams).toBe(0);
  });
});

async function waitFor(check: () => boolean, timeoutMs = 3000) {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
