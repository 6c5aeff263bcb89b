import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest, preHandlerAsyncHookHandler, onSendAsyncHookHandler } from 'fastify';
import { isUniqueViolation, Prisma, type PrismaClient } from '@corral/db';
import type { Logger } from '@corral/logging';

// `Idempotency-Key` on mutating REST routes (the IETF httpapi draft, as
// Stripe does it): per caller (API key), the first request under a key is
// run and its answer stored; the same key with the same request gets that
// answer again (`Idempotent-Replayed: true`), the same key with a different
// request is 422, and a key whose first request is still running is 409.
// Server faults (5xx) are not stored, so a retry runs again.

export const IDEMPOTENCY_HEADER = 'idempotency-key';
export const IDEMPOTENCY_REPLAYED_HEADER = 'idempotent-replayed';
const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;
/** How long an answer is kept for replays. */
export const IDEMPOTENCY_TTL_MS = 24 * 3600_000;

export type IdempotencyBegin =
  | { kind: 'new' }
  | { kind: 'replay'; status: number; body: unknown }
  | { kind: 'mismatch' }
  | { kind: 'in-flight' };

export interface IdempotencyStore {
  /** Claims `key` for this request, or says what became of the request that claimed it first. */
  begin(scope: string, key: string, requestHash: string, ttlMs: number): Promise<IdempotencyBegin>;
  complete(scope: string, key: string, status: number, body: unknown): Promise<void>;
  /** Forgets the key (the request failed on our side): the next try runs anew. */
  abandon(scope: string, key: string): Promise<void>;
}

export function prismaIdempotencyStore(prisma: PrismaClient): IdempotencyStore {
  const existing = async (scope: string, key: string, requestHash: string): Promise<IdempotencyBegin | undefined> => {
    const row = await prisma.idempotencyKey.findUnique({ where: { callerScope_key: { callerScope: scope, key } } });
    if (!row) return undefined;
    if (row.expiresAt.getTime() <= Date.now()) {
      await prisma.idempotencyKey.deleteMany({ where: { id: row.id, expiresAt: { lte: new Date() } } });
      return undefined;
    }
    if (row.requestHash !== requestHash) return { kind: 'mismatch' };
    if (row.responseStatus === null) return { kind: 'in-flight' };
    return { kind: 'replay', status: row.responseStatus, body: row.responseBody };
  };
  return {
    async begin(scope, key, requestHash, ttlMs) {
      for (let attempt = 0; attempt < 3; attempt++) {
        const found = await existing(scope, key, requestHash);
        if (found) return found;
        try {
          await prisma.idempotencyKey.create({ data: { key, callerScope: scope, requestHash, expiresAt: new Date(Date.now() + ttlMs) } });
          return { kind: 'new' };
        } catch (err) {
          // Another request claimed it between the read and the insert: look again.
          if (!isUniqueViolation(err)) throw err;
        }
      }
      return { kind: 'in-flight' };
    },
    async complete(scope, key, status, body) {
      await prisma.idempotencyKey.updateMany({
        where: { callerScope: scope, key },
        data: { responseStatus: status, responseBody: body === undefined ? Prisma.DbNull : (body as Prisma.InputJsonValue) },
      });
    },
    async abandon(scope, key) {
      await prisma.idempotencyKey.deleteMany({ where: { callerScope: scope, key, responseStatus: null } });
    },
  };
}

/** In memory, for tests and single-process use. */
export function memoryIdempotencyStore(now: () => number = Date.now): IdempotencyStore {
  const rows = new Map<string, { hash: string; status?: number; body?: unknown; expiresAt: number }>();
  const id = (scope: string, key: string) => `${scope}\u0000${key}`;
  return {
    async begin(scope, key, requestHash, ttlMs) {
      const row = rows.get(id(scope, key));
      if (row && row.expiresAt > now()) {
        if (row.hash !== requestHash) return { kind: 'mismatch' };
        if (row.status === undefined) return { kind: 'in-flight' };
        return { kind: 'replay', status: row.status, body: row.body };
      }
      rows.set(id(scope, key), { hash: requestHash, expiresAt: now() + ttlMs });
      return { kind: 'new' };
    },
    async complete(scope, key, status, body) {
      const row = rows.get(id(scope, key));
      if (row) Object.assign(row, { status, body });
    },
    async abandon(scope, key) {
      const row = rows.get(id(scope, key));
      if (row && row.status === undefined) rows.delete(id(scope, key));
    },
  };
}

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
