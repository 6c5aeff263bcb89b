import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient, QmpCommandError, QmpConnectionError, withQmp } from './qmp-client';

// The QMP client against a fake QMP server on a real unix socket.

type Handler = (message: { execute: string; arguments?: Record<string, unknown>; id?: unknown }, socket: Socket) => void;

interface FakeQmp {
  path: string;
  received: Array<{ execute: string; arguments?: Record<string, unknown>; id?: unknown }>;
  sockets: Socket[];
  close(): Promise<void>;
}

const GREETING = { QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake' }, capabilities: ['oob'] } };

function send(socket: Socket, message: unknown): void {
  // QEMU ends its lines with CRLF.
  socket.write(`${JSON.stringify(message)}\r\n`);
}

async function fakeQmp(dir: string, handlers: Record<string, Handler> = {}, options: { greet?: boolean } = {}): Promise<FakeQmp> {
  const path = join(dir, `qmp-${Math.random().toString(36).slice(2)}.sock`);
  const received: FakeQmp['received'] = [];
  const sockets: Socket[] = [];
  const server: Server = createServer((socket) => {
    sockets.push(socket);
    if (options.greet !== false) send(socket, GREETING);
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let i: number;
      while ((i = buffer.indexOf('\n')) >= 0) {
        const message = JSON.parse(buffer.slice(0, i));
        buffer = buffer.slice(i + 1);
        received.push(message);
        const handler = handlers[message.execute];
        if (handler) handler(message, socket);
        else if (message.execute === 'qmp_capabilities') send(socket, { return: {}, id: message.id });
        else send(socket, { error: { class: 'CommandNotFound', desc: `The command ${message.execute} has not been found` }, id: message.id });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    path,
    received,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('QmpClient', () => {
  let dir: string;
  const servers: FakeQmp[] = [];
  const clients: QmpClient[] = [];

  const serve = async (handlers?: Record<string, Handler>, options?: { greet?: boolean }) => {
    const server = await fakeQmp(dir, handlers, options);
    servers.push(server);
    return server;
  };
  const connect = async (path: string, options?: Parameters<typeof QmpClient.connect>[1]) => {
    const client = await QmpClient.connect(path, options);
    clients.push(client);
    return client;
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'corral-qmp-'));
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const s of servers.splice(0)) await s.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads the greeting and negotiates capabilities before anything else', async () => {
    const server = await serve();
    const client = await connect(server.path);
    expect(client.serverGreeting?.version?.qemu).toEqual({ major: 7, minor: 2, micro: 22 });
    expect(server.received).toEqual([{ execute: 'qmp_capabilities', id: expect.any(Number) }]);
  });

  it('matches answers to commands by id, even out of order', async () => {
    const server = await serve({
      // Answers the slow command only after the fast one.
      'query-status': (m, s) => setTimeout(() => send(s, { return: { status: 'running', running: true }, id: m.id }), 50),
      'query-name': (m, s) => send(s, { return: { name: 'vm1' }, id: m.id }),
    });
    const client = await connect(server.path);
    const [status, name] = await Promise.all([client.execute('query-status'), client.execute('query-name')]);
    expect(status).toEqual({ status: 'running', running: true });
    expect(name).toEqual({ name: 'vm1' });
  });

  it('sends arguments as given', async () => {
    const server = await serve({ migrate: (m, s) => send(s, { return: {}, id: m.id }) });
    const client = await connect(server.path);
    await client.execute('migrate', { uri: 'exec:cat > /tmp/x' });
    expect(server.received.at(-1)).toEqual({ execute: 'migrate', arguments: { uri: 'exec:cat > /tmp/x' }, id: expect.any(Number) });
  });

  it('turns error answers into QmpCommandError', async () => {
    const server = await serve({ cont: (m, s) => send(s, { error: { class: 'GenericError', desc: 'Migration is not finished' }, id: m.id }) });
    const client = await connect(server.path);
    const err = await client.execute('cont').catch((e) => e);
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toMatchObject({ command: 'cont', errorClass: 'GenericError', desc: 'Migration is not finished' });
    // The connection is still usable.
    await expect(client.execute('nope')).rejects.toMatchObject({ errorClass: 'CommandNotFound' });
  });

  it('collects events and passes them to listeners, without mistaking them for answers', async () => {
    const server = await serve({
      stop: (m, s) => {
        send(s, { timestamp: { seconds: 1, microseconds: 2 }, event: 'STOP' });
        send(s, { return: {}, id: m.id });
      },
    });
    const client = await connect(server.path, { maxEvents: 2 });
    const seen: string[] = [];
    client.onEvent((e) => seen.push(e.event));
    await client.execute('stop');
    expect(seen).toEqual(['STOP']);
    expect(client.events).toEqual([{ timestamp: { seconds: 1, microseconds: 2 }, event: 'STOP' }]);
    send(server.sockets[0], { event: 'A' });
    send(server.sockets[0], { event: 'B' });
    await client.execute('stop');
    // Bounded: the oldest are dropped.
    expect(client.events.map((e) => e.event)).toEqual(['B', 'STOP']);
  });

  it('times out a command that gets no answer, and ignores its late answer', async () => {
    let lateId: unknown;
    const server = await serve({ 'query-migrate': (m) => (lateId = m.id) });
    const client = await connect(server.path);
    const started = Date.now();
    await expect(client.execute('query-migrate', undefined, { timeoutMs: 100 })).rejects.toMatchObject({ name: 'QmpConnectionError', reason: 'timeout' });
    expect(Date.now() - started).toBeLessThan(2000);
    send(server.sockets[0], { return: { status: 'late' }, id: lateId });
    // Still usable afterwards.
    await expect(client.execute('nope')).rejects.toBeInstanceOf(QmpCommandError);
  });

  it('times out a handshake when the server never greets', async () => {
    const server = await serve({}, { greet: false });
    const err = await QmpClient.connect(server.path, { timeoutMs: 150 }).catch((e) => e);
    expect(err).toBeInstanceOf(QmpConnectionError);
    expect(err.reason).toBe('timeout');
  });

  it('rejects pending commands when the server goes away', async () => {
    const server = await serve({ 'system_powerdown': (_m, s) => setTimeout(() => s.destroy(), 20) });
    const client = await connect(server.path);
    await expect(client.execute('system_powerdown')).rejects.toMatchObject({ name: 'QmpConnectionError', reason: 'closed' });
    expect(client.closed).toBe(true);
    await expect(client.execute('query-status')).rejects.toMatchObject({ reason: 'closed' });
  });

  it('drops a connection that sends something other than JSON', async () => {
    const server = await serve({ 'query-status': (_m, s) => s.write('not json\n') });
    const client = await connect(server.path);
    await expect(client.execute('query-status')).rejects.toMatchObject({ reason: 'protocol' });
  });

  it('reports a missing socket as a connect error', async () => {
    const err = await QmpClient.connect(join(dir, 'missing.sock')).catch((e) => e);
    expect(err).toMatchObject({ name: 'QmpConnectionError', reason: 'connect' });
  });

  it('retries until the socket appears', async () => {
    const path = join(dir, 'later.sock');
    const connecting = QmpClient.connectWithRetry(path, { retryForMs: 5000, retryIntervalMs: 20 });
    await new Promise((r) => setTimeout(r, 150));
    // A server that appears late on the same path.
    const server = createServer((socket) => {
      send(socket, GREETING);
      socket.on('data', (d) => send(socket, { return: {}, id: JSON.parse(d.toString()).id }));
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    try {
      const client = await connecting;
      clients.push(client);
      expect(client.serverGreeting).toBeDefined();
    } finally {
      for (const c of clients.splice(0)) c.close();
      await new Promise((r) => server.close(r));
    }
  });

  it('gives up retrying when told to', async () => {
    const started = Date.now();
    const err = await QmpClient.connectWithRetry(join(dir, 'never.sock'), { retryForMs: 10_000, retryIntervalMs: 10, shouldRetry: () => Date.now() - started < 100 }).catch((e) => e);
    expect(err).toMatchObject({ reason: 'connect' });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('withQmp closes the session whatever happens', async () => {
    const server = await serve({ 'query-status': (m, s) => send(s, { return: { status: 'paused' }, id: m.id }) });
    let kept: QmpClient | undefined;
    const status = await withQmp(server.path, async (qmp) => {
      kept = qmp;
      return qmp.execute<{ status: string }>('query-status');
    });
    expect(status.status).toBe('paused');
    expect(kept?.closed).toBe(true);
    await expect(
      withQmp(server.path, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
  });
});
