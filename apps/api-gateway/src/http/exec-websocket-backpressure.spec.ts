import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { BidiCall, StreamCallOpts } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import type { schedulerV1 } from '@corral/proto';
import { eventually } from '@corral/testing';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, FakeWorkloadStreams, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';
import { SocketSendWindow } from './workload-stream-routes';
import { EXEC_CHANNELS } from './workload-stream-schemas';

// Backpressure of exec output over the WebSocket: the gateway reads the
// upstream stream only as fast as the client takes frames off the socket.

const KEY = 'crl_teamaaaa_asecret';
const CHUNK_BYTES = 64 * 1024;
/** 50 MB of output: far more than the socket window and the kernel's socket buffers together. */
const TOTAL_CHUNKS = 800;
/** Most the gateway may have read upstream while the client reads nothing (the 1 MiB window plus loopback buffers). */
const PULLED_BOUND_CHUNKS = 256;

interface ClientSocket {
  on(event: 'message', listener: (data: Buffer) => void): void;
  on(event: 'open' | 'close', listener: () => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  pause(): void;
  resume(): void;
  close(): void;
}
const WebSocket = createRequire(__filename)('ws') as new (url: string, options: { headers: Record<string, string> }) => ClientSocket;

/** An exec upstream whose output is produced only when the gateway asks for the next message. */
class FloodingStreams extends FakeWorkloadStreams {
  pulled = 0;

  override exec(_opts: StreamCallOpts = {}): BidiCall<schedulerV1.ExecWorkloadRequest, schedulerV1.ExecWorkloadResponse> {
    const counted = () => this.pulled++;
    const responses = (async function* (): AsyncGenerator<schedulerV1.ExecWorkloadResponse> {
      yield { kind: { $case: 'started', value: {} } };
      for (let i = 0; i < TOTAL_CHUNKS; i++) {
        counted();
        yield { kind: { $case: 'stdout', value: Buffer.alloc(CHUNK_BYTES, 120) } };
      }
      yield { kind: { $case: 'exit', value: { exitCode: 0 } } };
    })();
    return { write: async () => undefined, end: () => undefined, cancel: () => undefined, responses };
  }
}

describe('REST exec backpressure (WebSocket)', () => {
  let app: FastifyInstance;
  let streams: FloodingStreams;
  let url: string;

  beforeEach(async () => {
    const scheduler = new FakeScheduler();
    streams = new FloodingStreams();
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler, workloadStreams: streams, hostRegistry: new FakeHostRegistry(), authenticate: fakeAuthenticator({ [KEY]: { keyId: 'k', admin: false, teamId: 'team-a' } }) }),
      logger: silentLogger,
      bodyLimitBytes: 1024 * 1024,
      fileMaxBytes: 1000,
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const workloadId = scheduler.add({ teamId: 'team-a', state: 'running' }).id;
    url = `ws://127.0.0.1:${(app.server.address() as AddressInfo).port}/v1/workloads/${workloadId}/exec?command=flood`;
  });
  afterEach(() => app.close());

  it('stops reading upstream while the client reads nothing, then delivers everything', async () => {
    const socket = new WebSocket(url, { headers: { authorization: `Bearer ${KEY}` } });
    let stdoutBytes = 0;
    let exit: unknown;
    const closed = new Promise<void>((resolve, reject) => {
      socket.on('error', reject);
      socket.on('close', () => resolve());
    });
    socket.on('message', (data) => {
      if (data[0] === EXEC_CHANNELS.stdout) stdoutBytes += data.length - 1;
      if (data[0] === EXEC_CHANNELS.exit) exit = JSON.parse(data.subarray(1).toString());
    });
    await new Promise<void>((resolve) => socket.on('open', () => resolve()));
    socket.pause();

    // Settled: the count has not moved over several looks (without backpressure it would be at TOTAL_CHUNKS).
    let last = -1;
    let same = 0;
    const pulled = await eventually(
      () => {
        const now = streams.pulled;
        same = now > 0 && now === last ? same + 1 : 0;
        last = now;
        return same >= 5 ? now : undefined;
      },
      { what: 'the gateway to stop reading the exec upstream' },
    );
    expect(pulled).toBeLessThanOrEqual(PULLED_BOUND_CHUNKS);

    socket.resume();
    await closed;
    expect(stdoutBytes).toBe(TOTAL_CHUNKS * CHUNK_BYTES);
    expect(exit).toEqual({ exitCode: 0 });
  }, 60_000);
});

describe('SocketSendWindow', () => {
  it('has room until the unsent bytes pass the bound, and again once the socket has written them', async () => {
    const written: (() => void)[] = [];
    const window = new SocketSendWindow({ send: (_data, done) => written.push(() => done?.()) }, 10);
    window.send(Buffer.alloc(6));
    await window.room();
    window.send(Buffer.alloc(6));
    let roomy = false;
    const room = window.room().then(() => (roomy = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(roomy).toBe(false);
    written[0]();
    await room;
    expect(roomy).toBe(true);
  });

  it('lets waiters go when released (the socket closed)', async () => {
    const window = new SocketSendWindow({ send: () => undefined }, 1);
    window.send(Buffer.alloc(2));
    const room = window.room();
    window.release();
    await expect(room).resolves.toBeUndefined();
  });
});
