import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { NotFoundError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import type { ServerWritableStream } from '@grpc/grpc-js';
import { AsyncQueue } from '../common/async-queue';
import { ERROR_FIELD_KEY } from '../errors/status-mapping';
import { implementServerStream } from '../server/streams';
import { forwardToCall } from './forward-to-call';
import { messagesOf } from './messages-of';
import { firstMessageOf, forwardRequests, uploadedChunks } from './request-streams';

// Stream forwarding with fakes: what is pulled from a source while the call
// pushes back, cancellation in both directions, and the error mapping.

/** Lets every pending promise and I/O callback run: whatever could move on has. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A writable call whose buffer is full whenever `full` is set; 'drain' is emitted by the test. */
class FakeCall<T> extends EventEmitter {
  readonly written: T[] = [];
  full = false;
  write(message: T): boolean {
    this.written.push(message);
    return !this.full;
  }
}

/** A source that counts how often it was asked for the next message. */
function countingSource(count: number) {
  const state = { pulls: 0, closed: false };
  const source = (async function* () {
    try {
      for (let i = 0; i < count; i++) {
        state.pulls++;
        yield i;
      }
    } finally {
      state.closed = true;
    }
  })();
  return { source, state };
}

describe('forwardToCall', () => {
  it('does not pull the next message while the call pushes back, and goes on at drain', async () => {
    const call = new FakeCall<number>();
    const { source, state } = countingSource(5);
    call.full = true;
    const done = forwardToCall(source, call, new AbortController().signal);
    await settle();
    expect(call.written).toEqual([0]);
    expect(state.pulls).toBe(1);
    await settle();
    expect(state.pulls).toBe(1);

    call.full = false;
    call.emit('drain');
    await expect(done).resolves.toBe(5);
    expect(call.written).toEqual([0, 1, 2, 3, 4]);
  });

  it('stops waiting for drain when the call is cancelled, leaving the source to the caller to close', async () => {
    const call = new FakeCall<number>();
    const { source, state } = countingSource(5);
    call.full = true;
    const controller = new AbortController();
    const done = forwardToCall(source, call, controller.signal);
    await settle();
    controller.abort(new Error('cancelled'));
    await expect(done).rejects.toThrow('cancelled');
    expect(state.pulls).toBe(1);
    expect(call.listenerCount('drain')).toBe(0);
  });

  it('stops waiting for a slow source when the call is cancelled', async () => {
    const call = new FakeCall<number>();
    const controller = new AbortController();
    const never = { next: () => new Promise<IteratorResult<number>>(() => undefined) };
    const done = forwardToCall(never, call, controller.signal);
    controller.abort(new Error('gone'));
    await expect(done).rejects.toThrow('gone');
  });

  it("rejects with the source's own error", async () => {
    const call = new FakeCall<number>();
    const source = (async function* () {
      yield 1;
      throw new NotFoundError('no such file', { field: 'path' });
    })();
    await expect(forwardToCall(source, call, new AbortController().signal)).rejects.toMatchObject({ name: 'NotFoundError', field: 'path' });
    expect(call.written).toEqual([1]);
  });
});

describe('implementServerStream over a fake call', () => {
  /** A grpc-js server call as far as the wrapper uses it; emit('error', status) is how it sends a failed status. */
  function fakeServerCall() {
    const call = Object.assign(new FakeCall<unknown>(), {
      request: {},
      metadata: { get: () => [] },
      getDeadline: () => Infinity,
      ended: false,
      end() {
        call.ended = true;
      },
    });
    return call;
  }

  it('maps a typed error thrown mid-stream to its status and closes the handler', async () => {
    let closed = false;
    const impl = implementServerStream(
      agentV1.NodeAgentServiceService,
      {
        async *readFile() {
          try {
            yield { chunk: Buffer.from('a') };
            throw new NotFoundError('gone', { field: 'path' });
          } finally {
            closed = true;
          }
        },
      },
      silentLogger,
    );
    const call = fakeServerCall();
    const status = new Promise<{ code: number; metadata: { get(k: string): unknown[] } }>((resolve) => call.once('error', resolve));
    (impl.readFile as (c: ServerWritableStream<unknown, unknown>) => void)(call as unknown as ServerWritableStream<unknown, unknown>);
    const sent = await status;
    expect(sent.code).toBe(5); // NOT_FOUND
    expect(sent.metadata.get(ERROR_FIELD_KEY)).toEqual(['path']);
    expect(call.written).toHaveLength(1);
    await settle();
    expect(closed).toBe(true);
    expect(call.ended).toBe(false);
  });

  it('closes the handler when the caller cancels while the call pushes back', async () => {
    let closed = false;
    let pulls = 0;
    const impl = implementServerStream(
      agentV1.NodeAgentServiceService,
      {
        async *readFile() {
          try {
            for (;;) {
              pulls++;
              yield { chunk: Buffer.from('x') };
            }
          } finally {
            closed = true;
          }
        },
      },
      silentLogger,
    );
    const call = fakeServerCall();
    call.full = true;
    (impl.readFile as (c: ServerWritableStream<unknown, unknown>) => void)(call as unknown as ServerWritableStream<unknown, unknown>);
    await settle();
    expect(pulls).toBe(1);
    call.emit('cancelled');
    await settle();
    expect(closed).toBe(true);
    expect(pulls).toBe(1);
  });
});

describe('AsyncQueue flow control', () => {
  it('pauses its producer at the high-water mark and resumes it at half', async () => {
    const events: string[] = [];
    const queue = new AsyncQueue<number>(undefined, { highWaterMark: 4, pause: () => events.push('pause'), resume: () => events.push('resume') });
    for (let i = 0; i < 4; i++) queue.push(i);
    expect(events).toEqual(['pause']);
    const reader = queue[Symbol.asyncIterator]();
    await reader.next();
    expect(events).toEqual(['pause']);
    await reader.next();
    expect(events).toEqual(['pause', 'resume']);
  });

  it('lets a paused producer go when the reader leaves', async () => {
    const events: string[] = [];
    const queue = new AsyncQueue<number>(undefined, { highWaterMark: 2, pause: () => events.push('pause'), resume: () => events.push('resume') });
    queue.push(1);
    queue.push(2);
    await queue[Symbol.asyncIterator]().return?.();
    expect(events).toEqual(['pause', 'resume']);
  });
});

describe('messagesOf', () => {
  it('pauses the stream while the reader is behind, and resumes it as the reader catches up', async () => {
    const stream = new PassThrough({ objectMode: true });
    const messages = messagesOf<number>(stream, { highWaterMark: 4 });
    for (let i = 0; i < 10; i++) stream.write(i);
    await settle();
    expect(stream.isPaused()).toBe(true);
    expect(messages.length).toBe(4);
    stream.end();
    const seen: number[] = [];
    for await (const m of messages) seen.push(m);
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('delivers messages still buffered in the paused stream before its failure', async () => {
    const stream = new PassThrough({ objectMode: true });
    const messages = messagesOf<number>(stream, { highWaterMark: 2, failure: (err) => new Error(`mapped: ${(err as Error).message}`) });
    for (let i = 0; i < 6; i++) stream.write(i);
    await settle();
    // As grpc-js does for a failed status: the readable side ends, then the error is emitted.
    stream.end();
    stream.emit('error', new Error('status 13'));
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const m of messages) seen.push(m);
      })(),
    ).rejects.toThrow('mapped: status 13');
    expect(seen).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('ends quietly when the failure maps to nothing (a cancel the caller asked for)', async () => {
    const stream = new PassThrough({ objectMode: true });
    const settled = jest.fn();
    const messages = messagesOf<number>(stream, { failure: () => undefined, onSettled: settled });
    stream.emit('error', new Error('cancelled'));
    const seen: number[] = [];
    for await (const m of messages) seen.push(m);
    expect(seen).toEqual([]);
    expect(settled).toHaveBeenCalledTimes(1);
  });
});

describe('request streams', () => {
  type Message = agentV1.WriteFileRequest;
  const header: Message = { kind: { $case: 'header', value: { workloadId: 'w', path: '/f', mode: 0 } } };
  const chunk = (text: string): Message => ({ kind: { $case: 'chunk', value: Buffer.from(text) } });
  const eof: Message = { kind: { $case: 'eof', value: true } };
  const iterate = (messages: Message[]) => (async function* () {
    yield* messages;
  })();

  it('reads the opening message, or names its field when it is missing', async () => {
    await expect(firstMessageOf(iterate([header]), 'header', 'the header')).resolves.toMatchObject({ path: '/f' });
    await expect(firstMessageOf(iterate([chunk('x')]), 'header', 'the header')).rejects.toMatchObject({
      name: 'InvalidArgumentError',
      field: 'header',
      message: 'the first message must be the header',
    });
    await expect(firstMessageOf(iterate([]), 'header', 'the header')).rejects.toMatchObject({ field: 'header' });
  });

  it('yields the chunks up to eof, and refuses an upload cut short or a stray message', async () => {
    const collect = async (messages: Message[]) => {
      const parts: string[] = [];
      for await (const c of uploadedChunks(iterate(messages))) parts.push(c.toString());
      return parts;
    };
    await expect(collect([chunk('a'), chunk('b'), eof])).resolves.toEqual(['a', 'b']);
    await expect(collect([chunk('a')])).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'eof' });
    await expect(collect([chunk('a'), header])).rejects.toMatchObject({ field: 'chunk', message: 'only content chunks may follow the header' });
  });

  it('feeds requests one at a time, each after the previous was accepted, then reports the end', async () => {
    const accepted: ((v?: unknown) => void)[] = [];
    const delivered: number[] = [];
    const ended = jest.fn();
    const done = forwardRequests(
      (async function* () {
        yield* [1, 2, 3];
      })(),
      (n) => {
        delivered.push(n);
        return new Promise((resolve) => accepted.push(resolve));
      },
      { end: ended },
    );
    await settle();
    expect(delivered).toEqual([1]);
    accepted[0]();
    await settle();
    expect(delivered).toEqual([1, 2]);
    accepted[1]();
    await settle();
    accepted[2]();
    await done;
    expect(delivered).toEqual([1, 2, 3]);
    expect(ended).toHaveBeenCalledTimes(1);
  });

  it('reports a failed request stream (a cancelled call) instead of rejecting', async () => {
    const failed = jest.fn();
    const ended = jest.fn();
    await forwardRequests(
      (async function* () {
        yield 1;
        throw new Error('cancelled');
      })(),
      () => undefined,
      { end: ended, error: failed },
    );
    expect(failed).toHaveBeenCalledWith(expect.objectContaining({ message: 'cancelled' }));
    expect(ended).not.toHaveBeenCalled();
  });
});
