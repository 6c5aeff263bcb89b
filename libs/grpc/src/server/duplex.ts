import type { sendUnaryData, ServerDuplexStream, ServerReadableStream, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { DeadlineExceededError, isCorralError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import { toGrpcError } from '../errors/status-mapping';
import { forwardToCall } from '../streams/forward-to-call';
import { messagesOf } from '../streams/messages-of';
import type { CallContext } from './handlers';

// Client-streaming and bidirectional handlers, in the style of
// implementServerStream: requests arrive as an AsyncIterable, a bidi
// handler yields its responses (written with backpressure), errors go
// through the one typed-error → status mapping, and ctx.signal aborts when
// the caller cancels or its deadline passes.

type BidiMethods<S> = {
  [K in keyof S]: S[K] extends {
    requestStream: true;
    responseStream: true;
    requestDeserialize: (b: Buffer) => infer Req;
    responseSerialize: (r: infer Res) => Buffer;
  }
    ? (requests: AsyncIterable<Req>, ctx: CallContext) => AsyncIterable<Res>
    : never;
};

type ClientStreamMethods<S> = {
  [K in keyof S]: S[K] extends {
    requestStream: true;
    responseStream: false;
    requestDeserialize: (b: Buffer) => infer Req;
    responseSerialize: (r: infer Res) => Buffer;
  }
    ? (requests: AsyncIterable<Req>, ctx: CallContext) => Promise<Res>
    : never;
};

type AnyCall = ServerDuplexStream<unknown, unknown> | ServerReadableStream<unknown, unknown>;

function contextOf(call: AnyCall, path: string, logger: Logger) {
  const controller = new AbortController();
  const deadlineValue = call.getDeadline();
  const deadline = deadlineValue instanceof Date ? deadlineValue : Number.isFinite(deadlineValue) ? new Date(deadlineValue) : undefined;
  const onCancel = () => controller.abort(new DeadlineExceededError('call cancelled or past its deadline'));
  call.once('cancelled', onCancel);
  const timer = deadline ? setTimeout(onCancel, Math.max(0, deadline.getTime() - Date.now())) : undefined;
  const ctx: CallContext = { metadata: call.metadata, signal: controller.signal, deadline, method: path, logger };
  // Read only as fast as the handler takes requests: a slow consumer (a command not reading its stdin) holds the caller back.
  // Its 'error' is the status this server sends: nothing buffered matters after it.
  const requests = messagesOf<unknown>(call, { bufferedBeforeFailure: false });
  controller.signal.addEventListener('abort', () => requests.fail(controller.signal.reason), { once: true });
  const dispose = () => {
    if (timer) clearTimeout(timer);
    call.removeListener('cancelled', onCancel);
  };
  return { ctx, controller, requests, dispose };
}

export function implementBidiStream<S extends ServiceDefinition>(
  definition: S,
  handlers: Partial<BidiMethods<S>>,
  logger: Logger,
): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [key, method] of Object.entries(definition)) {
    const handler = (handlers as Record<string, ((r: AsyncIterable<unknown>, ctx: CallContext) => AsyncIterable<unknown>) | undefined>)[key];
    if (!handler) continue;
    if (!method.requestStream || !method.responseStream) throw new Error(`${method.path} is not a bidirectional streaming method`);
    impl[key] = (call: ServerDuplexStream<unknown, unknown>) => {
      void runBidi(method.path, handler, call, logger);
    };
  }
  return impl;
}

async function runBidi(
  path: string,
  handler: (requests: AsyncIterable<unknown>, ctx: CallContext) => AsyncIterable<unknown>,
  call: ServerDuplexStream<unknown, unknown>,
  logger: Logger,
) {
  const started = process.hrtime.bigint();
  const { ctx, controller, requests, dispose } = contextOf(call, path, logger);
  let outcome = 'OK';
  const iterator = handler(requests, ctx)[Symbol.asyncIterator]();
  try {
    await forwardToCall(iterator, call, controller.signal);
    call.end();
  } catch (err) {
    if (controller.signal.aborted) {
      outcome = 'CANCELLED';
    } else {
      const mapped = toGrpcError(err);
      outcome = isCorralError(err) ? err.code : 'INTERNAL';
      if (!isCorralError(err)) logger.error('unhandled error in gRPC stream handler', { method: path, err });
      call.emit('error', { code: mapped.code, details: mapped.details, metadata: mapped.metadata });
    }
  } finally {
    dispose();
    await iterator.return?.().catch(() => undefined);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    logger.debug('grpc stream', { method: path, outcome, ms: Math.round(ms * 10) / 10 });
  }
}

export function implementClientStream<S extends ServiceDefinition>(
  definition: S,
  handlers: Partial<ClientStreamMethods<S>>,
  logger: Logger,
): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [key, method] of Object.entries(definition)) {
    const handler = (handlers as Record<string, ((r: AsyncIterable<unknown>, ctx: CallContext) => Promise<unknown>) | undefined>)[key];
    if (!handler) continue;
    if (!method.requestStream || method.responseStream) throw new Error(`${method.path} is not a client-streaming method`);
    impl[key] = (call: ServerReadableStream<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      void runClientStream(method.path, handler, call, callback, logger);
    };
  }
  return impl;
}

async function runClientStream(
  path: string,
  handler: (requests: AsyncIterable<unknown>, ctx: CallContext) => Promise<unknown>,
  call: ServerReadableStream<unknown, unknown>,
  callback: sendUnaryData<unknown>,
  logger: Logger,
) {
  const started = process.hrtime.bigint();
  const { ctx, requests, dispose } = contextOf(call, path, logger);
  let outcome = 'OK';
  try {
    callback(null, await handler(requests, ctx));
  } catch (err) {
    const mapped = toGrpcError(err);
    outcome = isCorralError(err) ? err.code : 'INTERNAL';
    if (!isCorralError(err)) logger.error('unhandled error in gRPC handler', { method: path, err });
    callback({ code: mapped.code, details: mapped.details, metadata: mapped.metadata });
  } finally {
    dispose();
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    logger.debug('grpc call', { method: path, outcome, ms: Math.round(ms * 10) / 10 });
  }
}
