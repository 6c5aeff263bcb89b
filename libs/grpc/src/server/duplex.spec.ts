import { FailedPreconditionError, ResourceExhaustedError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { createClient } from '../client/client';
import { callClientStream, openBidiStream } from '../client/duplex';
import { implementBidiStream, implementClientStream } from './duplex';
import { startGrpcServer, type RunningGrpcServer } from './server';

// Bidirectional and client streaming over a real loopback socket: messages
// both ways while the call is open, typed errors, and cancellation reaching
// the handler.
describe('gRPC bidirectional and client streaming', () => {
  let server: RunningGrpcServer;
  const aborted: string[] = [];

  beforeAll(async () => {
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: agentV1.NodeAgentServiceService,
          implementation: {
            ...implementBidiStream(
              agentV1.NodeAgentServiceService,
              {
                // Echoes stdin as stdout (upper-cased) until EOF, then exits with the byte count.
                async *exec(requests, ctx) {
                  let bytes = 0;
                  for await (const message of requests) {
                    const kind = message.kind;
                    if (kind?.$case === 'start' && kind.value.command[0] === 'refuse') throw new FailedPreconditionError('not running');
                    if (kind?.$case === 'start') yield { kind: { $case: 'started', value: {} } };
                    if (kind?.$case === 'start' && kind.value.command[0] === 'hang') {
                      // Until the caller cancels.
                      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
                      aborted.push('exec');
                      return;
                    }
                    if (kind?.$case === 'stdin') {
                      bytes += kind.value.length;
                      yield { kind: { $case: 'stdout', value: Buffer.from(Buffer.from(kind.value).toString().toUpperCase()) } };
                    }
                    if (kind?.$case === 'stdinEof') break;
                  }
                  yield { kind: { $case: 'exit', value: { exitCode: bytes } } };
                },
              },
              silentLogger,
            ),
            ...implementClientStream(
              agentV1.NodeAgentServiceService,
              {
                async writeFile(requests) {
                  let bytes = 0;
                  for await (const message of requests) {
                    if (message.kind?.$case === 'chunk') bytes += message.kind.value.length;
                    if (bytes > 10) throw new ResourceExhaustedError('too big');
                  }
                  return { bytes };
                },
              },
              silentLogger,
            ),
          },
        },
      ],
    });
  });
  afterAll(() => server.stop());

  const client = () => createClient(agentV1.NodeAgentServiceClient, server.address);

  it('exchanges messages both ways while the call is open, and ends with the handler', async () => {
    const c = client();
    try {
      const call = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => c.raw.exec(md, o));
      await call.write({ kind: { $case: 'start', value: agentV1.ExecStart.fromPartial({ command: ['x'] }) } });
      const responses = call.responses[Symbol.asyncIterator]();
      expect((await responses.next()).value.kind.$case).toBe('started');
      // An answer to the first chunk arrives before the second is sent.
      await call.write({ kind: { $case: 'stdin', value: Buffer.from('ab') } });
      expect(Buffer.from((await responses.next()).value.kind.value).toString()).toBe('AB');
      await call.write({ kind: { $case: 'stdin', value: Buffer.from('cde') } });
      await call.write({ kind: { $case: 'stdinEof', value: true } });
      const rest: string[] = [];
      for (let next = await responses.next(); !next.done; next = await responses.next()) rest.push(JSON.stringify(next.value.kind));
      expect(rest).toEqual([JSON.stringify({ $case: 'stdout', value: Buffer.from('CDE') }), JSON.stringify({ $case: 'exit', value: { exitCode: 5 } })]);
    } finally {
      c.close();
    }
  });

  it('throws typed errors and lets the caller cancel', async () => {
    const c = client();
    try {
      const refused = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => c.raw.exec(md, o));
      await refused.write({ kind: { $case: 'start', value: agentV1.ExecStart.fromPartial({ command: ['refuse'] }) } });
      const drain = async (it: AsyncIterable<unknown>) => {
        for await (const m of it) void m;
      };
      await expect(drain(refused.responses)).rejects.toBeInstanceOf(FailedPreconditionError);

      const controller = new AbortController();
      const cancelled = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => c.raw.exec(md, o), { signal: controller.signal });
      await cancelled.write({ kind: { $case: 'start', value: agentV1.ExecStart.fromPartial({ command: ['hang'] }) } });
      const it = cancelled.responses[Symbol.asyncIterator]();
      await it.next();
      controller.abort();
      await expect(it.next()).resolves.toMatchObject({ done: true });
      for (let i = 0; i < 200 && !aborted.includes('exec'); i++) await new Promise((r) => setTimeout(r, 10));
      expect(aborted).toEqual(['exec']);
    } finally {
      c.close();
    }
  });

  it('sends a client stream and returns the answer, or the typed error', async () => {
    const c = client();
    try {
      const chunks = (n: number) => Array.from({ length: n }, () => ({ kind: { $case: 'chunk' as const, value: Buffer.from('abc') } }));
      await expect(callClientStream<agentV1.WriteFileRequest, agentV1.WriteFileResponse>((md, o, cb) => c.raw.writeFile(md, o, cb), chunks(3))).resolves.toEqual({ bytes: 9 });
      await expect(callClientStream<agentV1.WriteFileRequest, agentV1.WriteFileResponse>((md, o, cb) => c.raw.writeFile(md, o, cb), chunks(5))).rejects.toBeInstanceOf(ResourceExhaustedError);
      const failing = (async function* () {
        yield { kind: { $case: 'chunk' as const, value: Buffer.from('a') } };
        throw new Error('source broke');
      })();
      await expect(callClientStream<agentV1.WriteFileRequest, agentV1.WriteFileResponse>((md, o, cb) => c.raw.writeFile(md, o, cb), failing)).rejects.toThrow('source broke');
    } finally {
      c.close();
    }
  });
});
