import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QgaClient, QgaCommandError, QgaConnectionError, withQga } from './qga-client';

// The guest agent client against a scripted fake agent on a real unix
// socket. The fake behaves like qemu-ga on its serial line: a 0xFF byte
// resets its parser (answered with a parse error, as qemu-ga does), an id
// sent with a command comes back in its answer, and guest-sync-delimited's
// answer is preceded by 0xFF.

type Message = { execute: string; arguments?: Record<string, unknown>; id?: unknown };
type Handler = (message: Message, socket: Socket) => void;

interface FakeAgent {
  path: string;
  received: Message[];
  resets: number;
  close(): Promise<void>;
}

const send = (socket: Socket, message: unknown) => socket.write(`${JSON.stringify(message)}\n`);
const answer = (socket: Socket, to: Message, message: Record<string, unknown>) => send(socket, { ...message, ...(to.id === undefined ? {} : { id: to.id }) });

async function fakeAgent(dir: string, handlers: Record<string, Handler> = {}, options: { onConnect?: (socket: Socket) => void; silent?: boolean } = {}): Promise<FakeAgent> {
  const path = join(dir, `qga-${Math.random().toString(36).slice(2)}.sock`);
  const sockets: Socket[] = [];
  const agent: FakeAgent = { path, received: [], resets: 0, close: async () => undefined };
  const server: Server = createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    options.onConnect?.(socket);
    let buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      if (options.silent) return;
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const reset = buffer.indexOf(0xff);
        const newline = buffer.indexOf(0x0a);
        if (reset >= 0 && (newline < 0 || reset < newline)) {
          buffer = buffer.subarray(reset + 1);
          agent.resets++;
          send(socket, { error: { class: 'GenericError', desc: "JSON parse error, stray '\\uFFFD'" } });
          continue;
        }
        if (newline < 0) return;
        const message = JSON.parse(buffer.subarray(0, newline).toString()) as Message;
        buffer = buffer.subarray(newline + 1);
        agent.received.push(message);
        const handler = handlers[message.execute];
        if (handler) handler(message, socket);
        else if (message.execute === 'guest-sync-delimited') {
          socket.write(Buffer.from([0xff]));
          send(socket, { return: message.arguments?.id });
        } else answer(socket, message, { error: { class: 'CommandNotFound', desc: `The command ${message.execute} has not been found` } });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  agent.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return agent;
}

describe('guest agent client', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'corral-qga-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('resets the agent parser, resyncs with guest-sync-delimited, then runs commands in order', async () => {
    const agent = await fakeAgent(dir, {
      'guest-info': (m, s) => answer(s, m, { return: { version: '7.2.22' } }),
      'guest-exec': (m, s) => answer(s, m, { return: { pid: (m.arguments?.arg as string[]).length } }),
    });
    try {
      const qga = await QgaClient.connect(agent.path);
      expect(agent.resets).toBe(1);
      expect(agent.received[0]).toEqual({ execute: 'guest-sync-delimited', arguments: { id: expect.any(Number) } });
      const [info, exec] = await Promise.all([qga.execute('guest-info'), qga.execute('guest-exec', { path: 'echo', arg: ['a', 'b', 'c'] })]);
      expect(info).toEqual({ version: '7.2.22' });
      expect(exec).toEqual({ pid: 3 });
      expect(agent.received.slice(1)).toEqual([
        { execute: 'guest-info', id: expect.any(String) },
        { execute: 'guest-exec', arguments: { path: 'echo', arg: ['a', 'b', 'c'] }, id: expect.any(String) },
      ]);
      expect(agent.received[1].id).not.toBe(agent.received[2].id);
      qga.close();
      expect(qga.closed).toBe(true);
      await expect(qga.execute('guest-info')).rejects.toBeInstanceOf(QgaConnectionError);
    } finally {
      await agent.close();
    }
  });

  it('skips what an earlier client left in the stream: old answers, an old sync answer, bytes split across reads', async () => {
    const agent = await fakeAgent(
      dir,
      {
        'guest-sync-delimited': (m, s) => {
          // A stale sync answer (another id) first, then the real one split in two writes.
          s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"return": 1}\n')]));
          const real = Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"return": ${m.arguments?.id as number}}\n`)]);
          s.write(real.subarray(0, 5));
          setImmediate(() => s.write(real.subarray(5)));
        },
        'guest-ping': (m, s) => answer(s, m, { return: {} }),
      },
      // Left over from a client that gave up: answers nobody waits for any more.
      { onConnect: (s) => s.write('{"return": {"pid": 41}}\n{"error": {"class": "GenericError", "desc": "old"}}\n{"retu') },
    );
    try {
      await withQga(agent.path, async (qga) => {
        expect(await qga.execute('guest-ping')).toEqual({});
      });
    } finally {
      await agent.close();
    }
  });

  it('reports agent errors as QgaCommandError with class and description', async () => {
    const agent = await fakeAgent(dir, {
      'guest-file-open': (m, s) => answer(s, m, { error: { class: 'GenericError', desc: "failed to open file '/nope' (mode: 'r'): No such file or directory" } }),
    });
    try {
      await withQga(agent.path, async (qga) => {
        const err = await qga.execute('guest-file-open', { path: '/nope', mode: 'r' }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(QgaCommandError);
        expect(err).toMatchObject({ command: 'guest-file-open', errorClass: 'GenericError', desc: expect.stringContaining('No such file') });
        // The session goes on after an error answer.
        await expect(qga.execute('guest-nothing')).rejects.toMatchObject({ errorClass: 'CommandNotFound' });
      });
    } finally {
      await agent.close();
    }
  });

  it('gives up on a guest whose agent never answers, with a timeout error instead of hanging', async () => {
    const agent = await fakeAgent(dir, {}, { silent: true });
    try {
      const err = await QgaClient.connect(agent.path, { timeoutMs: 200 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QgaConnectionError);
      expect(err).toMatchObject({ reason: 'timeout' });
    } finally {
      await agent.close();
    }
  });

  it('times a command out without taking its late answer for the next one', async () => {
    let late: (() => void) | undefined;
    const agent = await fakeAgent(dir, {
      'guest-exec-status': (m, s) => (late = () => answer(s, m, { return: { exited: true, exitcode: 0 } })),
      'guest-ping': (m, s) => {
        late?.();
        answer(s, m, { return: { pong: true } });
      },
    });
    try {
      const qga = await QgaClient.connect(agent.path, { commandTimeoutMs: 100 });
      await expect(qga.execute('guest-exec-status', { pid: 1 })).rejects.toMatchObject({ reason: 'timeout' });
      expect(await qga.execute('guest-ping')).toEqual({ pong: true });
      // Answers without an id, or with one this session never used, are not anyone's.
      expect(qga.closed).toBe(false);
      qga.close();
    } finally {
      await agent.close();
    }
  });

  it('fails to connect to a socket that is not there, and on a connection the agent drops', async () => {
    await expect(QgaClient.connect(join(dir, 'absent.sock'))).rejects.toMatchObject({ name: 'QgaConnectionError', reason: 'connect' });
    const agent = await fakeAgent(dir, { 'guest-shutdown': (_m, s) => s.destroy() });
    try {
      const qga = await QgaClient.connect(agent.path);
      await expect(qga.execute('guest-shutdown')).rejects.toMatchObject({ reason: 'closed' });
    } finally {
      await agent.close();
    }
  });

  it('drops a connection that answers with something other than JSON', async () => {
    const agent = await fakeAgent(dir, { 'guest-ping': (_m, s) => s.write('this is not json\n') });
    try {
      const qga = await QgaClient.connect(agent.path);
      await expect(qga.execute('guest-ping')).rejects.toMatchObject({ reason: 'protocol' });
    } finally {
      await agent.close();
    }
  });
});
