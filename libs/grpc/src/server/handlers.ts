import type { Metadata, sendUnaryData, ServerUnaryCall, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { DeadlineExceededError, isCorralError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import { toGrpcError } from '../errors/status-mapping';

export interface CallContext {
  metadata: Metadata;
  /** Aborted when the caller cancels or its deadline passes. */
  signal: AbortSignal;
  /** Deadline from the caller, if it sent one. */
  deadline?: Date;
  method: string;
  logger: Logger;
}

type UnaryMethods<S> = {
  [K in keyof S]: S[K] extends { requestDeserialize: (b: Buffer) => infer Req; responseSerialize: (r: infer Res) => Buffer }
    ? (request: Req, ctx: CallContext) => Promise<Res>
    : never;
};

/**
 * Turns async handlers into grpc-js handlers. Every call goes through the
 * same two interceptors: a deadline guard (work is abandoned once the caller
 * can no longer receive the answer) and a logger (method, status, duration),
 * and through the one typed-error → status mapping.
 */
export function implementUnary<S extends ServiceDefinition>(
  definition: S,
  handlers: Partial<UnaryMethods<S>>,
  logger: Logger,
): UntypedServiceImplementation {
  const impl: UntypedServiceImplementation = {};
  for (const [key, method] of Object.entries(definition)) {
    const handler = (handlers as Record<string, ((req: unknown, ctx: CallContext) => Promise<unknown>) | undefined>)[key];
    if (!handler) continue;
    impl[key] = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      void runUnary(method.path, handler, call, callback, logger);
    };
  }
  return impl;
}

async function runUnary(
  path: string,
  handler: (req: unknown, ctx: CallContext) => Promise<unknown>,
  call: ServerUnaryCall<unknown, unknown>,
  callback: sendUnaryData<unknown>,
  logger: Logger,
) {
  const started = process.hrtime.bigint();
  const controller = new AbortController();
  const deadlineValue = call.getDeadline();
  const deadline = deadlineValue instanceof Date ? deadlineValue : Number.isFinite(deadlineValue) ? new Date(deadlineValue) : undefined;
  let timer: NodeJS.Timeout | undefined;
  const onCancel = () => controller.abort(new DeadlineExceededError('call cancelled or past its deadline'));
  call.once('cancelled', onCancel);
  if (deadline) {
    const remaining = deadline.getTime() - Date.now();
    timer = setTimeout(onCancel, Math.max(0, remaining));
  }
  const ctx: CallContext = { metadata: call.metadata, signal: controller.signal, deadline, method: path, logger };
  let outcome = 'OK';
  try {
    if (controller.signal.aborted) throw controller.signal.reason;
    const response = await handler(call.request, ctx);
    callback(null, response);
  } catch (err) {
    const mapped = toGrpcError(err);
    outcome = isCorralError(err) ? err.code : 'INTERNAL';
    if (!isCorralError(err)) logger.error('unhandled error in gRPC handler', { method: path, err });
    callback({ code: mapped.code, details: mapped.details, metadata: mapped.metadata });
  } finally {
    if (timer) clearTimeout(timer);
    call.removeListener('cancelled', onCancel);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    logger.debug('grpc call', { method: path, outcome, ms: Math.round(ms * 10) / 10 });
  }
}
