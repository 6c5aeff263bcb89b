import { createHash } from 'node:crypto';
import { ConflictError, InvalidArgumentError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import { IDEMPOTENCY_KEY_FIELD } from '../errors/public-error';
import type { Caller } from './caller';
import { IDEMPOTENCY_KEY_PATTERN, IDEMPOTENCY_TTL_MS, type IdempotencyStore } from './idempotency-store';

// Idempotency-Key for the public gRPC API, with REST's semantics over the
// same store: the key comes in call metadata `idempotency-key`; per caller
// (API key) the first call under a key runs and its answer is stored; the
// same key with the same request gets that answer again, with a different
// request INVALID_ARGUMENT, while the first is still running ABORTED. A call
// that fails is not stored (its key is freed), so a retry runs again.

export const IDEMPOTENCY_METADATA_KEY = 'idempotency-key';

/** How an answer is stored and replayed (ts-proto's JSON codec of the response message). */
export interface AnswerCodec<T> {
  toJSON(message: T): unknown;
  fromJSON(json: unknown): T;
}

export interface IdempotentCalls {
  /**
   * Runs `call` once per (caller, key): `key` undefined runs it unconditionally.
   * `method` and `request` identify the request (a key reused with another is refused).
   */
  once<T>(caller: Caller, key: string | undefined, method: string, request: unknown, codec: AnswerCodec<T>, call: () => Promise<T>): Promise<T>;
}

/** The one `idempotency-key` value of a call; several values or a malformed one are refused. */
export function idempotencyKeyOf(values: readonly (string | Buffer)[]): string | undefined {
  if (values.length === 0) return undefined;
  const key = values.length === 1 ? values[0].toString() : undefined;
  if (key === undefined || !IDEMPOTENCY_KEY_PATTERN.test(key)) {
    throw new InvalidArgumentError('idempotency-key must be one value of 1-255 visible ASCII characters', { field: IDEMPOTENCY_KEY_FIELD });
  }
  return key;
}

export function idempotentCalls(store: IdempotencyStore, logger: Logger, ttlMs = IDEMPOTENCY_TTL_MS): IdempotentCalls {
  return {
    async once<T>(caller: Caller, key: string | undefined, method: string, request: unknown, codec: AnswerCodec<T>, call: () => Promise<T>): Promise<T> {
      if (key === undefined) return call();
      const scope = caller.keyId;
      // Prefixed so a key used over REST and then over gRPC counts as a different request.
      const hash = createHash('sha256').update(JSON.stringify(['grpc', method, request])).digest('hex');
      const begun = await store.begin(scope, key, hash, ttlMs);
      switch (begun.kind) {
        case 'replay':
          return codec.fromJSON(begun.body);
        case 'mismatch':
          throw new InvalidArgumentError('idempotency-key was already used with a different request; use a new key', { field: IDEMPOTENCY_KEY_FIELD });
        case 'in-flight':
          throw new ConflictError('a call with this idempotency-key is still being processed; retry later', { field: IDEMPOTENCY_KEY_FIELD });
        case 'new':
          break;
      }
      let answer: T;
      try {
        answer = await call();
      } catch (err) {
        await store.abandon(scope, key).catch((abandonErr) => logger.warn('freeing an idempotency key failed', { method, err: abandonErr }));
        throw err;
      }
      // gRPC has no HTTP status; 200 marks the stored answer as complete.
      await store.complete(scope, key, 200, codec.toJSON(answer)).catch((err) => logger.warn('storing an idempotent answer failed', { method, err }));
      return answer;
    },
  };
}
