import type { ServerWritableStream, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { DeadlineExceededError, isCorralError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import { toGrpcError } from '../errors/status-mapping';
import { forwardToCall } from '../streams/forward-to-call';
import type { CallContext } from './handlers';

type StreamMethods<S> = {
  [K in keyof S]: S[K] extends {
    responseStream: true;
    requestDeserialize: (b: Buffer) => infer Req;
    responseSerialize: (r: infer Res) => Buffer;
  }
    ? (request: Req, ctx: CallContext) => AsyncIterable<Res>
    : never;
};

/**
 * Server-streaming handlers as async generators. Each yielded message is
 * written (waiting for the transport to drain when it pushes back); the
 * stream ends when the generator returns. A throw ends the stream with the
 * same typed-error → status mapping as implementUnary, also mid-stream.
 * `ctx.signal` aborts when the caller cancels or its deadline passes, and
 * the generator is then closed (its `finally` blocks run).
 */
export function implementServerStream<S extends ServiceDefinition>(
  definition: S,
  handlers: Partial<StreamMethods<S>>,
  logger: Logger,
): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [key, method] of Object.entries(definition)) {
    const handler = (handlers as Record<string, ((req: unknown, ctx: CallContext) => AsyncIterable<unknown>) | undefined>)[key];
    if (!handler) continue;
    if (!method.responseStream || method.requestStream) throw new Error(`${method.path} is not a server-streaming method`);
    impl[key] = (call: ServerWritableStream<unknown, unknown>) => {
      void runServerStream(method.path, handler, call, logger);
    };
  }
  return impl;
}

async function runServerStream(
  path: string,
  handler: (req: unknown, ctx: CallContext) => AsyncIterable<unknown>,
  call: ServerWritableStream<unknown, unknown>,
  logger: Logger,
) {
  const started = process.hrtime.bigint();
  const controller = new AbortController();
  const deadlineValue = call.getDeadline();
  const deadline = deadlineValue instanceof Date ? deadlineValue : Number.isFinite(deadlineValue) ? new Date(deadlineValue) : undefined;
  let timer: NodeJS.Timeout | undefined;
  const onCancel = () => controller.abort(new DeadlineExceededError('call cancelled or past its deadline'));
  call.once('cancelled', onCancel);
  if (deadline) timer = setTimeout(onCancel, Math.max(0, deadline.getTime() - Date.now()));
  const ctx: CallContext = { metadata: call.metadata, signal: controller.signal, deadline, method: path, logger };
  let outcome = 'OK';
  let messages = 0;
  const iterator = handler(call.request, ctx)[Symbol.asyncIterator]();
  try {
    await forwardToCall(iterator, call, controller.signal, () => messages++);
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
    if (timer) clearTimeout(timer);
    call.removeListener('cancelled', onCancel);
    // Closes the generator (runs its finally blocks) however the call ended.
    await iterator.return?.().catch(() => undefined);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    logger.debug('grpc stream', { method: path, outcome, messages, ms: Math.round(ms * 10) / 10 });
  }
}
