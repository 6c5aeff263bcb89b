import { Metadata, status as GrpcStatus, type CallOptions, type ClientDuplexStream, type ClientWritableStream, type ServiceError } from '@grpc/grpc-js';
import { fromGrpcError, isServiceError } from '../errors/status-mapping';
import { messagesOf } from '../streams/messages-of';
import type { StreamCallOpts } from './streams';

// Client sides of client-streaming and bidirectional calls, with the same
// conventions as iterateServerStream: typed errors, no deadline unless
// asked, aborting `signal` cancels the call (and then ends quietly).

export interface BidiCall<Req, Res> {
  /** Sends one message, waiting while the transport pushes back. */
  write(message: Req): Promise<void>;
  /** Half-closes: no more messages from this side. */
  end(): void;
  /** The peer's messages; throws the call's failure as a typed error. */
  responses: AsyncIterable<Res>;
  cancel(): void;
}

type Start<Call> = (metadata: Metadata, options: Partial<CallOptions>) => Call;

function callOptions(opts: StreamCallOpts): Partial<CallOptions> {
  // Infinity survives the default-deadline interceptor (it only fills in a missing deadline).
  return { deadline: opts.deadlineMs ? new Date(Date.now() + opts.deadlineMs) : Infinity };
}

export function openBidiStream<Req, Res>(start: Start<ClientDuplexStream<Req, Res>>, opts: StreamCallOpts = {}): BidiCall<Req, Res> {
  const call = start(opts.metadata ?? new Metadata(), callOptions(opts));
  let finished = false;
  // Writers waiting for 'drain' are let go when the call ends (no 'drain' comes then).
  const waitingForDrain = new Set<() => void>();
  const cancel = () => call.cancel();
  opts.signal?.addEventListener('abort', cancel, { once: true });
  // Read only as fast as the caller iterates `responses`: a slow reader pauses the call, and
  // HTTP/2 flow control then holds the peer back (nothing piles up here).
  const responses = messagesOf<Res>(call, {
    onReturn: () => {
      if (!finished) call.cancel();
    },
    onSettled: () => {
      finished = true;
      opts.signal?.removeEventListener('abort', cancel);
      for (const release of waitingForDrain) release();
      waitingForDrain.clear();
    },
    failure: (err) => {
      if (opts.signal?.aborted && isServiceError(err) && err.code === GrpcStatus.CANCELLED) return undefined;
      return isServiceError(err) ? fromGrpcError(err) : err;
    },
  });
  return {
    write: (message) =>
      new Promise<void>((resolve) => {
        if (finished || call.writableEnded) return resolve();
        if (call.write(message)) return resolve();
        const release = () => {
          waitingForDrain.delete(release);
          call.removeListener('drain', release);
          resolve();
        };
        waitingForDrain.add(release);
        call.once('drain', release);
      }),
    end: () => {
      if (!call.writableEnded) call.end();
    },
    responses,
    cancel,
  };
}

type StartClientStream<Req, Res> = (
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientWritableStream<Req>;

/** Sends every message of `requests`, half-closes, and resolves with the peer's answer. */
export function callClientStream<Req, Res>(
  start: StartClientStream<Req, Res>,
  requests: AsyncIterable<Req> | Iterable<Req>,
  opts: StreamCallOpts = {},
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    let answered = false;
    const call = start(opts.metadata ?? new Metadata(), callOptions(opts), (err, res) => {
      answered = true;
      opts.signal?.removeEventListener('abort', cancel);
      if (err) reject(isServiceError(err) ? fromGrpcError(err) : err);
      else resolve(res);
    });
    const cancel = () => call.cancel();
    opts.signal?.addEventListener('abort', cancel, { once: true });
    void (async () => {
      try {
        for await (const message of requests) {
          if (answered) return;
          if (!call.write(message)) await new Promise((r) => call.once('drain', r));
        }
        call.end();
      } catch (err) {
        // The source failed: the call must not complete as if it had all of it.
        call.cancel();
        if (!answered) {
          answered = true;
          reject(err);
        }
      }
    })();
  });
}
