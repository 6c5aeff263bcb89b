import {
  credentials as grpcCredentials,
  InterceptingCall,
  Metadata,
  type CallOptions,
  type ChannelCredentials,
  type ClientReadableStream,
  type ClientUnaryCall,
  type Interceptor,
  type ServiceError,
} from '@grpc/grpc-js';
import { fromGrpcError, isServiceError } from '../errors/status-mapping';
import { iterateServerStream, type AnyServerStreamFn, type StreamCallOpts } from './streams';
import { tlsChannelOptions } from '../tls/tls-server-name';

/** Gives every call a deadline unless the caller set one. */
export function deadlineInterceptor(defaultMs: number): Interceptor {
  return (options, nextCall) => {
    if (!options.deadline) options = { ...options, deadline: new Date(Date.now() + defaultMs) };
    return new InterceptingCall(nextCall(options));
  };
}

export interface ClientOptions {
  deadlineMs?: number;
  credentials?: ChannelCredentials;
  /** Added to every call, e.g. an authorization header. */
  metadata?: () => Metadata | undefined;
}

type ClientCtor<C> = new (address: string, credentials: ChannelCredentials, options?: Record<string, unknown>) => C;

type UnaryFn<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

export interface CallOpts {
  metadata?: Metadata;
  deadlineMs?: number;
  signal?: AbortSignal;
}

/** A ts-proto grpc-js client whose unary methods return promises and throw typed Corral errors. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- matches any unary method signature
type AnyUnaryFn = (request: any, metadata: Metadata, options: Partial<CallOptions>, callback: (error: ServiceError | null, response: any) => void) => ClientUnaryCall;

export type StreamMethodName<C> = { [K in keyof C]: C[K] extends AnyServerStreamFn ? K : never }[keyof C];

export type PromiseClient<C> = {
  [K in keyof C as C[K] extends AnyServerStreamFn ? never : C[K] extends AnyUnaryFn ? K : never]: C[K] extends UnaryFn<infer Req, infer Res>
    ? (request: Req, opts?: CallOpts) => Promise<Res>
    : never;
} & {
  close(): void;
  raw: C;
  /**
   * A server-streaming method as an AsyncIterable that throws typed errors;
   * no deadline unless `opts.deadlineMs`; breaking out of the loop or
   * aborting `opts.signal` cancels the call.
   */
  stream<K extends StreamMethodName<C>>(
    method: K,
    request: C[K] extends (request: infer Req, ...rest: never[]) => unknown ? Req : never,
    opts?: StreamCallOpts,
  ): AsyncGenerator<C[K] extends (...args: never[]) => ClientReadableStream<infer Res> ? Res : never, void, undefined>;
};

export function createClient<C extends { close(): void }>(Ctor: ClientCtor<C>, address: string, options: ClientOptions = {}): PromiseClient<C> {
  const raw = new Ctor(address, options.credentials ?? grpcCredentials.createInsecure(), {
    interceptors: [deadlineInterceptor(options.deadlineMs ?? 10_000)],
    ...tlsChannelOptions(options.credentials),
  });
  return new Proxy({} as PromiseClient<C>, {
    get(_target, prop) {
      if (prop === 'raw') return raw;
      if (prop === 'close') return () => raw.close();
      if (prop === 'then') return undefined;
      if (prop === 'stream') {
        return (name: string, request: unknown, opts: StreamCallOpts = {}) => {
          const method = (raw as unknown as Record<string, AnyServerStreamFn>)[name];
          return iterateServerStream(
            (metadata, callOptions) => method.call(raw, request, opts.metadata ?? options.metadata?.() ?? metadata, callOptions),
            opts,
          );
        };
      }
      const method = (raw as unknown as Record<string | symbol, unknown>)[prop];
      if (typeof method !== 'function') return undefined;
      return (request: unknown, opts: CallOpts = {}) =>
        new Promise((resolve, reject) => {
          const metadata = opts.metadata ?? options.metadata?.() ?? new Metadata();
          const callOptions: Partial<CallOptions> = opts.deadlineMs ? { deadline: new Date(Date.now() + opts.deadlineMs) } : {};
          const call = (method as UnaryFn<unknown, unknown>).call(raw, request, metadata, callOptions, (err, res) => {
            opts.signal?.removeEventListener('abort', cancel);
            if (err) reject(isServiceError(err) ? fromGrpcError(err) : err);
            else resolve(res);
          });
          const cancel = () => call.cancel();
          opts.signal?.addEventListener('abort', cancel, { once: true });
        });
    },
  });
}
