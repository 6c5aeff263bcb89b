import type { Readable } from 'node:stream';
import { AsyncQueue } from '../common/async-queue';

// The reading side of stream forwarding: a grpc-js call (or any Readable in
// object mode) as an AsyncIterable of its messages that holds the sender back
// while the reader is behind. Pausing the call stops grpc-js asking for more
// messages, so HTTP/2 flow control pushes back to the peer instead of
// messages piling up here.

/** How many messages wait unread before the stream is paused. */
export const DEFAULT_MESSAGES_HIGH_WATER_MARK = 16;

export type MessageStream = Pick<Readable, 'on' | 'once' | 'pause' | 'resume' | 'readableLength'>;

export interface MessagesOfOptions {
  highWaterMark?: number;
  /** The reader left before the end (break, throw, return). */
  onReturn?: () => void;
  /** What the stream's 'error' becomes for the reader: an error to throw, or undefined to end quietly. */
  failure?: (err: unknown) => unknown;
  /** The stream has ended or failed (before the reader has necessarily seen it). */
  onSettled?: () => void;
  /**
   * Messages still buffered in the paused stream are read before its failure
   * (default). Off where the failure is final for the reader at once (a
   * server call whose status has been sent).
   */
  bufferedBeforeFailure?: boolean;
}

export function messagesOf<T>(stream: MessageStream, options: MessagesOfOptions = {}): AsyncQueue<T> {
  const queue = new AsyncQueue<T>(options.onReturn, {
    highWaterMark: options.highWaterMark ?? DEFAULT_MESSAGES_HIGH_WATER_MARK,
    pause: () => stream.pause(),
    resume: () => stream.resume(),
  });
  let failure: { error: unknown } | undefined;
  let settled = false;
  const settle = () => {
    if (settled) return;
    settled = true;
    options.onSettled?.();
  };
  const finish = () => {
    if (failure && failure.error !== undefined) queue.fail(failure.error);
    else queue.end();
  };
  stream.on('data', (message: T) => queue.push(message));
  stream.once('end', () => {
    settle();
    finish();
  });
  stream.once('error', (err: unknown) => {
    settle();
    failure = { error: options.failure ? options.failure(err) : err };
    // grpc-js ends the readable side before it reports a failed status: messages still buffered
    // in the paused stream come first, and 'end' follows them.
    if (options.bufferedBeforeFailure === false || stream.readableLength === 0) finish();
  });
  return queue;
}
