import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest, preHandlerAsyncHookHandler, onSendAsyncHookHandler } from 'fastify';
import type { Logger } from '@corral/logging';
import { IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN as KEY_PATTERN, IDEMPOTENCY_REPLAYED_HEADER, IDEMPOTENCY_TTL_MS, type IdempotencyStore } from '../operations/idempotency-store';

// `Idempotency-Key` on mutating REST routes (the IETF httpapi draft, as
// Stripe does it): per caller (API key), the first request under a key is
// run and its answer stored; the same key with the same request gets that
// answer again (`Idempotent-Replayed: true`), the same key with a different
// request is 422, and a key whose first request is still running is 409.
// Server faults (5xx) are not stored, so a retry runs again.

export {
  IDEMPOTENCY_HEADER,
  IDEMPOTENCY_REPLAYED_HEADER,
  IDEMPOTENCY_TTL_MS,
  memoryIdempotencyStore,
  prismaIdempotencyStore,
  type IdempotencyBegin,
  type IdempotencyStore,
} from '../operations/idempotency-store';

/** sha256 over what identifies the request: method, route, parameters and body. */
export function requestHash(request: FastifyRequest): string {
  const body = typeof request.body === 'string' ? request.body : JSON.stringify(request.body ?? null);
  return createHash('sha256')
    .update(JSON.stringify([request.method, request.routeOptions.url ?? request.url, request.params ?? {}, request.query ?? {}]))
    .update('\u0000')
    .update(body)
    .digest('hex');
}

interface Claim {
  scope: string;
  key: string;
}

const claims = new WeakMap<FastifyRequest, Claim>();

const refuse = (reply: FastifyReply, status: number, error: string, message: string) =>
  reply.code(status).type('application/json; charset=utf-8').send({ error, message, field: 'Idempotency-Key' });

export interface IdempotencyHooks {
  preHandler: preHandlerAsyncHookHandler;
  onSend: onSendAsyncHookHandler;
}

/**
 * Route hooks: `preHandler` (after authentication and body validation)
 * claims the key or answers from the store; `onSend` stores the answer.
 * Requests without the header are untouched.
 */
export function idempotencyHooks(store: IdempotencyStore, logger: Logger, ttlMs = IDEMPOTENCY_TTL_MS): IdempotencyHooks {
  return {
    async preHandler(request, reply) {
      const header = request.headers[IDEMPOTENCY_HEADER];
      if (header === undefined) return;
      const key = Array.isArray(header) ? undefined : header;
      if (key === undefined || !KEY_PATTERN.test(key)) {
        return refuse(reply, 400, 'invalid_argument', 'Idempotency-Key must be one value of 1-255 visible ASCII characters');
      }
      // The authentication hook ran first; idempotency is per API key.
      const scope = request.caller?.keyId;
      if (!scope) return;
      const begun = await store.begin(scope, key, requestHash(request), ttlMs);
      switch (begun.kind) {
        case 'new':
          claims.set(request, { scope, key });
          return;
        case 'replay':
          return reply.code(begun.status).header(IDEMPOTENCY_REPLAYED_HEADER, 'true').type('application/json; charset=utf-8').send(begun.body);
        case 'mismatch':
          return refuse(reply, 422, 'idempotency_key_reused', 'Idempotency-Key was already used with a different request; use a new key');
        case 'in-flight':
          return refuse(reply, 409, 'idempotency_key_in_flight', 'a request with this Idempotency-Key is still being processed; retry later');
      }
    },
    async onSend(request, reply, payload) {
      const claim = claims.get(request);
      if (!claim) return payload;
      claims.delete(request);
      try {
        if (reply.statusCode >= 500) {
          await store.abandon(claim.scope, claim.key);
        } else {
          const text = typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : undefined;
          let body: unknown = null;
          if (text !== undefined && text !== '') {
            try {
              body = JSON.parse(text);
            } catch {
              body = text;
            }
          }
          await store.complete(claim.scope, claim.key, reply.statusCode, body);
        }
      } catch (err) {
        // The answer still goes out; only its replay is lost.
        logger.warn('storing an idempotent answer failed', { reqId: request.id, err });
      }
      return payload;
    },
  };
}
