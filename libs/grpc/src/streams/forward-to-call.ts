import { drained, nextOrAbort, type DrainEmitter } from '../server/stream-waits';

// The writing side of stream forwarding: messages go to a grpc-js call only
// as fast as the call accepts them. write() returning false means the call's
// buffer is full (grpc-js completes a write once HTTP/2 flow control has let
// it out), so the next message is not even asked for until 'drain'.

/** What forwarding needs of a grpc-js writable call (server or client side). */
export type WritableCall<T> = DrainEmitter & { write(message: T): boolean };

/**
 * Writes every message of `source` to `call`, pulling the next one only
 * after the previous was accepted. Rejects with `signal.reason` as soon as
 * `signal` aborts (also while waiting on a slow source or a full call), and
 * with the source's own error when it throws; does not end the call or close
 * the source (the caller decides both). Resolves with the number of messages
 * written; `onWritten` counts them as they go (also for a stream that fails).
 */
export async function forwardToCall<T>(source: AsyncIterator<T>, call: WritableCall<T>, signal: AbortSignal, onWritten?: () => void): Promise<number> {
  let written = 0;
  if (signal.aborted) throw signal.reason;
  for (;;) {
    const next = await nextOrAbort(source, signal);
    if (next.done) return written;
    written++;
    onWritten?.();
    if (!call.write(next.value)) await drained(call, signal);
  }
}
