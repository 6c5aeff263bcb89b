import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { silentLogger } from '@corral/logging';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, FakeWorkloadStreams, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';
import { EXEC_CHANNELS } from './workload-stream-schemas';

// Exec over a real WebSocket client, files and snapshots through HTTP inject,
// against in-memory backends: framing, status codes, limits, team scoping.

interface TestSocket {
  on(event: 'message', listener: (data: Buffer) => void): void;
  on(event: 'close', listener: (code: number) => void): void;
  on(event: 'open', listener: () => void): void;
  on(event: 'unexpected-response', listener: (req: unknown, res: { statusCode: number }) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  send(data: Buffer | string): void;
  close(): void;
}
// ws ships no types here; it is the client @fastify/websocket itself depends on.
const WebSocket = createRequire(__filename)('ws') as new (url: string, options: { headers: Record<string, string> }) => TestSocket;

const KEY = 'crl_teamaaaa_asecret';
const OTHER_KEY = 'crl_teambbbb_bsecret';
const keys = {
  [KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' },
  [OTHER_KEY]: { keyId: 'k-b', admin: false, teamId: 'team-b' },
};
const FILE_LIMIT = 1000;

interface ExecResult {
  frames: { channel: number; payload: Buffer }[];
  closeCode: number;
}

describe('REST exec, files and snapshots', () => {
  let app: FastifyInstance;
  let scheduler: FakeScheduler;
  let streams: FakeWorkloadStreams;
  let base: string;
  let workloadId: string;

  beforeEach(async () => {
    scheduler = new FakeScheduler();
    streams = new FakeWorkloadStreams();
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler, workloadStreams: streams, hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator(keys) }),
      logger: silentLogger,
      bodyLimitBytes: 1024 * 1024,
      fileMaxBytes: FILE_LIMIT,
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `ws://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    workloadId = scheduler.add({ teamId: 'team-a', state: 'running' }).id;
  });
  afterEach(() => app.close());

  const auth = (key = KEY) => ({ authorization: `Bearer ${key}` });

  /** Connects, sends `frames` once open, and collects everything until the server closes. */
  const runExec = (query: string, frames: Buffer[] = [], key = KEY): Promise<ExecResult | { status: number }> =>
    new Promise((resolve, reject) => {
      const socket = new WebSocket(`${base}/v1/workloads/${workloadId}/exec?${query}`, { headers: auth(key) });
      const received: ExecResult['frames'] = [];
      socket.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode }));
      socket.on('error', (err) => reject(err));
      socket.on('open', () => frames.forEach((f) => socket.send(f)));
      socket.on('message', (data) => received.push({ channel: data[0], payload: data.subarray(1) }));
      socket.on('close', (code) => resolve({ frames: received, closeCode: code }));
    });
  const frame = (channel: number, payload: string | Buffer = '') => Buffer.concat([Buffer.from([channel]), Buffer.from(payload)]);

  describe('GET /v1/workloads/{id}/exec (WebSocket)', () => {
    it('runs the command and sends stdout, then the exit, then closes normally', async () => {
      const result = (await runExec('command=echo&command=hello&command=world&tty=true&columns=80&rows=24')) as ExecResult;
      expect(result.frames.map((f) => [f.channel, f.payload.toString()])).toEqual([
        [EXEC_CHANNELS.stdout, 'hello world (tty)\n'],
        [EXEC_CHANNELS.exit, JSON.stringify({ exitCode: 0 })],
      ]);
      expect(result.closeCode).toBe(1000);
      expect(streams.calls[0]).toEqual({
        method: 'exec',
        request: expect.objectContaining({ id: workloadId, teamId: 'team-a', command: ['echo', 'hello', 'world'], tty: true, size: { columns: 80, rows: 24 } }),
      });
    });

    it('passes stdin, resizes and end-of-stdin through, and separates stderr', async () => {
      const cat = (await runExec('command=cat', [frame(EXEC_CHANNELS.stdin, 'abc'), frame(EXEC_CHANNELS.resize, '{"columns":100,"rows":30}'), frame(EXEC_CHANNELS.stdinEof)])) as ExecResult;
      expect(cat.frames.map((f) => [f.channel, f.payload.toString()])).toEqual([
        [EXEC_CHANNELS.stdout, 'abc'],
        [EXEC_CHANNELS.stdout, 'resized to 100x30\n'],
        [EXEC_CHANNELS.exit, '{"exitCode":0}'],
      ]);
      const failing = (await runExec('command=fail-later')) as ExecResult;
      expect(failing.frames.map((f) => [f.channel, f.payload.toString()])).toEqual([
        [EXEC_CHANNELS.stderr, 'something broke\n'],
        [EXEC_CHANNELS.exit, '{"exitCode":3}'],
      ]);
    });

    it('answers errors before the upgrade as HTTP statuses', async () => {
      await expect(runExec('command=echo', [], 'crl_nobody_nosecret')).resolves.toEqual({ status: 401 });
      await expect(runExec('command=echo', [], OTHER_KEY)).resolves.toEqual({ status: 404 });
      await expect(runExec('command=not-running')).resolves.toEqual({ status: 409 });
      await expect(runExec('tty=true')).resolves.toEqual({ status: 400 });
      await expect(runExec('command=echo&workingDir=relative')).resolves.toEqual({ status: 400 });
    });

    it('cancels the upstream exec when the client goes away, and refuses text frames', async () => {
      const socket = new WebSocket(`${base}/v1/workloads/${workloadId}/exec?command=hang`, { headers: auth() });
      await new Promise<void>((resolve) => socket.on('open', () => resolve()));
      socket.close();
      for (let i = 0; i < 100 && streams.cancelledExecs === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(streams.cancelledExecs).toBe(1);
      const text = await new Promise<number>((resolve) => {
        const s = new WebSocket(`${base}/v1/workloads/${workloadId}/exec?command=hang`, { headers: auth() });
        s.on('open', () => s.send('not binary'));
        s.on('close', (code) => resolve(code));
      });
      expect(text).toBe(1003);
    });

    it('answers a plain GET with 426', async () => {
      const res = await app.inject({ method: 'GET', url: `/v1/workloads/${workloadId}/exec?command=echo`, headers: auth() });
      expect(res.statusCode).toBe(426);
    });
  });

  describe('files', () => {
    it('PUT streams the body into the file, GET streams it back, list=true lists the directory', async () => {
      const put = await app.inject({
        method: 'PUT',
        url: `/v1/workloads/${workloadId}/files?path=/srv/app.conf&mode=0600`,
        headers: { ...auth(), 'content-type': 'application/json' },
        payload: '{"not":"parsed"}',
      });
      expect(put.statusCode).toBe(200);
      expect(put.json()).toEqual({ path: '/srv/app.conf', bytes: 16 });
      expect(streams.calls).toContainEqual({ method: 'writeFile', request: { id: workloadId, teamId: 'team-a', path: '/srv/app.conf', mode: 0o600 } });
      const get = await app.inject({ method: 'GET', url: `/v1/workloads/${workloadId}/files?path=/srv/app.conf`, headers: auth() });
      expect(get.statusCode).toBe(200);
      expect(get.headers['content-type']).toBe('application/octet-stream');
      expect(get.body).toBe('{"not":"parsed"}');
      const list = await app.inject({ method: 'GET', url: `/v1/workloads/${workloadId}/files?path=/srv&list=true`, headers: auth() });
      expect(list.json()).toEqual({ path: '/srv', entries: [{ name: 'app.conf', kind: 'file', sizeBytes: 16, mode: 0o644, modifiedAt: '2026-01-01T00:00:00.000Z' }] });
    });

    it('answers 413 for an upload over the limit (declared or streamed) and stores nothing', async () => {
      const declared = await app.inject({ method: 'PUT', url: `/v1/workloads/${workloadId}/files?path=/big`, headers: auth(), payload: Buffer.alloc(FILE_LIMIT + 1) });
      expect(declared.statusCode).toBe(413);
      expect(declared.json()).toEqual({ error: 'payload_too_large', message: 'the request body is too large' });
      const { Readable } = await import('node:stream');
      const chunked = await app.inject({
        method: 'PUT',
        url: `/v1/workloads/${workloadId}/files?path=/big`,
        headers: { ...auth(), 'transfer-encoding': 'chunked' },
        payload: Readable.from([Buffer.alloc(600), Buffer.alloc(600)]),
      });
      expect(chunked.statusCode).toBe(413);
      expect(streams.files.has('/big')).toBe(false);
    });

    it('checks paths and scopes by team', async () => {
      for (const path of ['relative', '/a/../etc/passwd']) {
        const res = await app.inject({ method: 'GET', url: `/v1/workloads/${workloadId}/files?path=${encodeURIComponent(path)}`, headers: auth() });
        expect(res.statusCode).toBe(400);
        expect(res.json().field).toBe('path');
      }
      const other = await app.inject({ method: 'GET', url: `/v1/workloads/${workloadId}/files?path=/x`, headers: auth(OTHER_KEY) });
      expect(other.statusCode).toBe(404);
      const missing = await app.inject({ method: 'GET', url: `/v1/workloads/${workloadId}/files?path=/absent`, headers: auth() });
      expect(missing.statusCode).toBe(404);
      expect(missing.json()).toEqual({ error: 'not_found', message: 'resource not found' });
    });
  });

  describe('POST /v1/workloads/{id}/snapshots', () => {
    it('streams progress lines and then the result as NDJSON', async () => {
      const res = await app.inject({ method: 'POST', url: `/v1/workloads/${workloadId}/snapshots`, headers: auth(), payload: { leavePaused: true } });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('application/x-ndjson');
      const lines = res.body.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines).toEqual([
        { type: 'progress', status: 'active', transferredBytes: 100, totalBytes: 1000, remainingBytes: 900, elapsedMs: 10 },
        { type: 'progress', status: 'active', transferredBytes: 200, totalBytes: 1000, remainingBytes: 800, elapsedMs: 20 },
        { type: 'result', snapshotId: 'snap-1', bytes: 1000, durationMs: 42 },
      ]);
      expect(streams.calls).toContainEqual({ method: 'snapshot', request: { id: workloadId, teamId: 'team-a', leavePaused: true } });
    });

    it('restores a snapshot into a new workload (201 + location); 404 for an unknown snapshot, 400 for a malformed id', async () => {
      const res = await app.inject({ method: 'POST', url: `/v1/workloads/${workloadId}/snapshots/snap-1-abc/restore`, headers: auth(), payload: { name: 'again' } });
      expect(res.statusCode).toBe(201);
      expect(res.json()).toMatchObject({ name: 'again', state: 'running', teamId: 'team-a' });
      expect(res.headers.location).toBe(`/v1/workloads/${res.json().id}`);
      expect(scheduler.calls).toContainEqual({ method: 'restoreWorkload', request: { id: workloadId, teamId: 'team-a', snapshotId: 'snap-1-abc', name: 'again' } });
      expect((await app.inject({ method: 'POST', url: `/v1/workloads/${workloadId}/snapshots/snap-2-abc/restore`, headers: auth() })).statusCode).toBe(404);
      const bad = await app.inject({ method: 'POST', url: `/v1/workloads/${workloadId}/snapshots/..%2Fetc/restore`, headers: auth() });
      expect(bad.statusCode).toBe(400);
      expect((await app.inject({ method: 'POST', url: `/v1/workloads/${workloadId}/snapshots/snap-1-abc/restore`, headers: auth(OTHER_KEY) })).statusCode).toBe(404);
    });

    it('lists snapshots (GET) and deletes them idempotently (DELETE → 204, again 204); 409 while in use, 400 for a malformed id, 404 for another team', async () => {
      streams.snapshots.set(workloadId, [
        { snapshotId: 'snap-1-abc', sourceWorkloadId: workloadId, createdAt: new Date('2026-01-01T00:00:00Z'), sizeBytes: 4096, driver: 'qemu' },
        { snapshotId: 'snap-2-def', sourceWorkloadId: workloadId, createdAt: undefined, sizeBytes: 0, driver: '' },
      ]);
      const list = await app.inject({ method: 'GET', url: `/v1/workloads/${workloadId}/snapshots`, headers: auth() });
      expect(list.statusCode).toBe(200);
      expect(list.json()).toEqual({
        snapshots: [
          { id: 'snap-1-abc', sourceWorkloadId: workloadId, createdAt: '2026-01-01T00:00:00.000Z', sizeBytes: 4096, driver: 'qemu' },
          { id: 'snap-2-def', sourceWorkloadId: workloadId, createdAt: null, sizeBytes: 0, driver: '' },
        ],
      });
      expect(streams.calls).toContainEqual({ method: 'listSnapshots', request: { id: workloadId, teamId: 'team-a' } });

      const del = await app.inject({ method: 'DELETE', url: `/v1/workloads/${workloadId}/snapshots/snap-1-abc`, headers: auth() });
      expect(del.statusCode).toBe(204);
      expect(del.body).toBe('');
      expect(streams.calls).toContainEqual({ method: 'deleteSnapshot', request: { id: workloadId, teamId: 'team-a', snapshotId: 'snap-1-abc' } });
      expect((await app.inject({ method: 'DELETE', url: `/v1/workloads/${workloadId}/snapshots/snap-1-abc`, headers: auth() })).statusCode).toBe(204);
      expect((await app.inject({ method: 'GET', url: `/v1/workloads/${workloadId}/snapshots`, headers: auth() })).json().snapshots.map((s: { id: string }) => s.id)).toEqual(['snap-2-def']);

      streams.snapshotsInUse.add('snap-2-def');
      const busy = await app.inject({ method: 'DELETE', url: `/v1/workloads/${workloadId}/snapshots/snap-2-def`, headers: auth() });
      expect(busy.statusCode).toBe(409);
      const bad = await app.inject({ method: 'DELETE', url: `/v1/workloads/${workloadId}/snapshots/..%2Fetc`, headers: auth() });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().message).toMatch(/snapshotId/);
      expect((await app.inject({ method: 'GET', url: `/v1/workloads/${workloadId}/snapshots`, headers: auth(OTHER_KEY) })).statusCode).toBe(404);
      expect((await app.inject({ method: 'DELETE', url: `/v1/workloads/${workloadId}/snapshots/snap-2-def`, headers: auth(OTHER_KEY) })).statusCode).toBe(404);
    });

    it('takes an empty body, and answers 404 for another team', async () => {
      expect((await app.inject({ method: 'POST', url: `/v1/workloads/${workloadId}/snapshots`, headers: auth() })).statusCode).toBe(200);
      expect((await app.inject({ method: 'POST', url: `/v1/workloads/${workloadId}/snapshots`, headers: auth(OTHER_KEY) })).statusCode).toBe(404);
    });
  });
});
