import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { createTestDatabase, eventually, natsUrlOrSkip, type TestDatabase } from '@corral/testing';

// Backpressure of exec output with every hop real: a WebSocket client that
// reads nothing → gateway → scheduler → agent → a command writing 50 MB. The
// command must end up blocked on its stdout with a bounded amount written
// (nothing on the way buffers without bound), and reading afterwards must
// still deliver every byte and the exit code.

interface TestSocket {
  on(event: 'message', listener: (data: Buffer) => void): void;
  on(event: 'open' | 'close', listener: () => void): void;
  on(event: 'unexpected-response', listener: (req: unknown, res: { statusCode: number }) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  pause(): void;
  resume(): void;
}
// ws has no types installed; @fastify/websocket (the gateway's) depends on it.
const WebSocket = createRequire(__filename)('ws') as new (url: string, options: { headers: Record<string, string> }) => TestSocket;

const repoRoot = resolve(__dirname, '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const describeE2e = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('e2e skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(240_000);

const STDOUT = 1;
const EXIT = 4;
const TOTAL_BYTES = 50_000_000;
/** Pipe, queues and call buffers of three hops, HTTP/2 windows and socket buffers: each a few MiB at most. */
const WRITTEN_BOUND_BYTES = 24 * 1024 * 1024;
/** Where the kernel puts a writer to sleep on a full pipe, or on the socket pair Node gives a child as stdout. */
const BLOCKED_WRITING = /pipe_write|sock_alloc_send|unix_stream_sendmsg/;

describeE2e('exec backpressure end to end', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined };
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-e2e-backpressure-'));
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, natsUrl, portsMode: 'free', localAgent: false });
    adminKey = system.adminKey as string;
    const token = await eventually(async () => {
      const res = await api('POST', '/v1/hosts/registration-tokens', { ttlSeconds: 600 });
      return res.status === 201 ? res : undefined;
    }, { what: 'a registration token' });
    await system.startAgent({ registrationToken: String(token.json?.token) });
    await eventually(async () => ((await api('GET', '/v1/hosts')).json?.hosts as { status: string }[]).some((h) => h.status === 'online') || undefined, {
      what: 'agent online',
      timeoutMs: 60_000,
    });
  });

  afterAll(async () => {
    if (system) {
      const listed = await api('GET', '/v1/workloads').catch(() => undefined);
      for (const w of (listed?.json?.workloads ?? []) as { id: string; state: string }[]) if (!['stopped', 'failed'].includes(w.state)) await api('DELETE', `/v1/workloads/${w.id}`);
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('holds a command back while the WebSocket client reads nothing, then delivers all its output', async () => {
    const created = await api('POST', '/v1/workloads', { name: 'flood', driver: 'process', command: ['/bin/sleep', '600'] });
    expect(created.status).toBe(201);
    const id = String(created.json?.id);
    await eventually(async () => ((await api('GET', `/v1/workloads/${id}`)).json?.state === 'running' ? true : undefined), { what: 'workload running', timeoutMs: 60_000 });

    const marker = join(dataDir, 'writer.pid');
    const command = ['/bin/sh', '-c', `echo $$ > ${marker}; exec head -c ${TOTAL_BYTES} /dev/zero`];
    const query = command.map((c) => `command=${encodeURIComponent(c)}`).join('&');
    const socket = new WebSocket(`${system.gatewayUrl.replace(/^http/, 'ws')}/v1/workloads/${id}/exec?${query}`, { headers: { authorization: `Bearer ${adminKey}` } });
    let received = 0;
    let exitCode: number | undefined;
    socket.on('message', (data) => {
      if (data[0] === STDOUT) received += data.length - 1;
      if (data[0] === EXIT) exitCode = (JSON.parse(data.subarray(1).toString()) as { exitCode: number }).exitCode;
    });
    const closed = new Promise<void>((resolveClosed, reject) => {
      socket.on('error', reject);
      socket.on('unexpected-response', (_req, res) => reject(new Error(`exec refused with HTTP ${res.statusCode}`)));
      socket.on('close', () => resolveClosed());
    });
    await new Promise<void>((resolveOpen) => socket.on('open', () => resolveOpen()));
    socket.pause();

    const pid = await eventually(() => (existsSync(marker) && readFileSync(marker, 'utf8').endsWith('\n') ? Number(readFileSync(marker, 'utf8')) : undefined), {
      what: 'the command to start',
    });
    // Settled: asleep in a write and not one byte further over several looks. Without
    // backpressure somewhere on the way, head would have written everything and be gone.
    let last = -1;
    let same = 0;
    const written = await eventually(
      () => {
        const wchan = readFileSync(`/proc/${pid}/wchan`, 'utf8');
        const io = /wchar:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
        const now = io ? Number(io[1]) : -1;
        same = BLOCKED_WRITING.test(wchan) && now === last ? same + 1 : 0;
        last = now;
        return same >= 5 ? now : undefined;
      },
      { what: 'the command to be blocked writing to its full stdout', timeoutMs: 60_000 },
    );
    expect(written).toBeLessThanOrEqual(WRITTEN_BOUND_BYTES);

    socket.resume();
    await closed;
    expect(received).toBe(TOTAL_BYTES);
    expect(exitCode).toBe(0);
  });
});
