import { FailedPreconditionError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { createClient } from '../client/client';
import { implementServerStream } from './streams';
import { startGrpcServer, type RunningGrpcServer } from './server';

// Server streaming over a real loopback socket: messages in order, typed
// errors mid-stream, and cancellation reaching the handler.
describe('gRPC server streaming', () => {
  let server: RunningGrpcServer;
  let closed: string[] = [];
  let aborted: string[] = [];

  beforeAll(async () => {
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: agentV1.NodeAgentServiceService,
          implementation: implementServerStream(
            agentV1.NodeAgentServiceService,
            {
              async *streamLogs(req, ctx) {
                try {
                  for (let i = 0; i < req.tailBytes; i++) yield { data: Buffer.from(`line ${i}\n`) };
                  if (req.workloadId === 'fail') throw new FailedPreconditionError('driver cannot follow');
                  if (req.workloadId === 'crash') throw new Error('secret backend text');
                  if (req.follow) {
                    // Forever, until the caller cancels.
                    for (let i = 0; ; i++) {
                      await new Promise((r) => setTimeout(r, 20));
                      if (ctx.signal.aborted) {
                        aborted.push(req.workloadId);
                        return;
                      }
                      yield { data: Buffer.from(`more ${i}\n`) };
                    }
                  }
                } finally {
                  closed.push(req.workloadId);
                }
              },
            },
            silentLogger,
          ),
        },
      ],
    });
  });
  afterAll(() => server.stop());
  beforeEach(() => {
    closed = [];
    aborted = [];
  });

  const client = () => createClient(agentV1.NodeAgentServiceClient, server.address, { deadlineMs: 5000 });
  const collect = async (it: AsyncIterable<{ data: Buffer }>) => {
    const out: string[] = [];
    for await (const m of it) out.push(Buffer.from(m.data).toString());
    return out;
  };

  it('streams every message in order, then ends', async () => {
    expect(await collect(client().stream('streamLogs', { workloadId: 'w', tailBytes: 3, follow: false }))).toEqual(['line 0\n', 'line 1\n', 'line 2\n']);
  });

  it('delivers the messages before a typed error, then throws the typed error', async () => {
    const got: string[] = [];
    const err = await (async () => {
      for await (const m of client().stream('streamLogs', { workloadId: 'fail', tailBytes: 2, follow: false })) got.push(Buffer.from(m.data).toString());
    })().catch((e: unknown) => e);
    expect(got).toEqual(['line 0\n', 'line 1\n']);
    expect(err).toMatchObject({ name: 'FailedPreconditionError', code: 'FAILED_PRECONDITION', message: 'driver cannot follow' });
  });

  it('hides untyped errors behind the fixed message', async () => {
    const err = await collect(client().stream('streamLogs', { workloadId: 'crash', tailBytes: 1, follow: false })).catch((e: Error) => e);
    expect(err).toMatchObject({ name: 'InternalError', message: 'internal error' });
  });

  it('cancels the call when the caller leaves the loop, and the handler sees it', async () => {
    let n = 0;
    for await (const _ of client().stream('streamLogs', { workloadId: 'brk', tailBytes: 1, follow: true })) {
      if (++n === 3) break;
    }
    await waitFor(() => closed.includes('brk'));
  });

  it('cancels the call when the signal aborts, ending the iteration quietly', async () => {
    const controller = new AbortController();
    const got: string[] = [];
    setTimeout(() => controller.abort(), 150);
    for await (const m of client().stream('streamLogs', { workloadId: 'sig', tailBytes: 0, follow: true }, { signal: controller.signal })) {
      got.push(Buffer.from(m.data).toString());
    }
    expect(got.length).toBeGreaterThan(0);
    await waitFor(() => closed.includes('sig'));
  });

  it('aborts the handler when the deadline passes, and the caller gets DEADLINE_EXCEEDED', async () => {
    const err = await collect(client().stream('streamLogs', { workloadId: 'dl', tailBytes: 0, follow: true }, { deadlineMs: 200 })).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    await waitFor(() => closed.includes('dl'));
  });
});

async function waitFor(check: () => boolean, timeoutMs = 3000) {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
