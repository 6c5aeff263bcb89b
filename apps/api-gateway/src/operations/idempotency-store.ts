import { isUniqueViolation, Prisma, type PrismaClient } from '@corral/db';

// Where Idempotency-Key answers are kept, shared by the REST hooks
// (http/idempotency.ts) and the public gRPC API (idempotent-calls.ts): per
// caller scope (API key) and key, the request's hash and, once answered, the
// stored answer.

export const IDEMPOTENCY_HEADER = 'idempotency-key';
export const IDEMPOTENCY_REPLAYED_HEADER = 'idempotent-replayed';
export const IDEMPOTENCY_KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;
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
