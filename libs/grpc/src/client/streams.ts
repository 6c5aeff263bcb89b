import { Metadata, status as GrpcStatus, type CallOptions, type ClientReadableStream } from '@grpc/grpc-js';
import { fromGrpcError, isServiceError } from '../errors/status-mapping';

export interface StreamCallOpts {
  metadata?: Metadata;
  /** No deadline unless given: a followed stream may run for as long as the workload does. */
  deadlineMs?: number;
  /** Cancels the call; the iteration then ends quietly. */
  signal?: AbortSignal;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- matches any server-streaming method signature
export type AnyServerStreamFn = (request: any, metadata?: Metadata, options?: Partial<CallOptions>) => ClientReadableStream<any>;

/**
 * A server-streaming call as an AsyncIterable of its messages. Failures are
 * thrown as typed Corral errors (same mapping as the unary clients); leaving
 * the loop early (break, throw) or aborting `signal` cancels the call, so no
 * stream is left open.
 */
export async function* iterateServerStream<Res>(
  start: (metadata: Metadata, options: Partial<CallOptions>) => ClientReadableStream<Res>,
  opts: StreamCallOpts = {},
): AsyncGenerator<Res, void, undefined> {
  if (opts.signal?.aborted) return;
  // Infinity survives the default-deadline interceptor (it only fills in a missing deadline).
  const deadline = opts.deadlineMs ? new Date(Date.now() + opts.deadlineMs) : Infinity;
  const call = start(opts.metadata ?? new Metadata(), { deadline });
  const cancel = () => call.cancel();
  opts.signal?.addEventListener('abort', cancel, { once: true });
  let finished = false;
  try {
    for await (const message of call as AsyncIterable<Res>) yield message;
    finished = true;
  } catch (err) {
    finished = true;
    if (opts.signal?.aborted && isServiceError(err) && err.code === GrpcStatus.CANCELLED) return;
    throw isServiceError(err) ? fromGrpcError(err) : err;
  } finally {
    opts.signal?.removeEventListener('abort', cancel);
    if (!finished) call.cancel();
  }
}
