// Waits shared by the server-streaming and bidirectional handlers: both must
// stop waiting the moment their call is cancelled or past its deadline.

/** The iterator's next value, or a rejection as soon as the call is aborted (a generator may be waiting on something slow). */
export function nextOrAbort<T>(iterator: AsyncIterator<T>, signal: AbortSignal): Promise<IteratorResult<T>> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    iterator.next().then(
      (r) => {
        signal.removeEventListener('abort', onAbort);
        resolve(r);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/** What announces that a full write buffer has drained: any Node Writable, so any grpc-js call. */
export interface DrainEmitter {
  once(event: 'drain', listener: () => void): unknown;
  removeListener(event: 'drain', listener: () => void): unknown;
}

/** Resolves when a call's write buffer has drained; rejects when the call is aborted first. */
export function drained(call: DrainEmitter, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      call.removeListener('drain', done);
      signal.removeEventListener('abort', abort);
      resolve();
    };
    const abort = () => {
      call.removeListener('drain', done);
      reject(signal.reason);
    };
    call.once('drain', done);
    signal.addEventListener('abort', abort, { once: true });
  });
}
