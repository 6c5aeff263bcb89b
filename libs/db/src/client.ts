import { PrismaPg } from '@prisma/adapter-pg';
import { Prisma, PrismaClient } from './generated/prisma/client';

export interface PrismaClientOptions {
  /**
   * Upper bound on pooled connections per client. Every service replica holds
   * one pool, so this times the replica count must stay under the server's
   * max_connections.
   */
  maxConnections?: number;
  /** How long to wait for a free connection before a query fails. */
  connectionTimeoutMs?: number;
  /** Idle connections above zero are closed after this long. */
  idleTimeoutMs?: number;
  /** Told about errors on idle pooled connections (e.g. the server restarted). */
  onConnectionError?: (error: Error) => void;
}

const DEFAULT_MAX_CONNECTIONS = 10;
const DEFAULT_CONNECTION_TIMEOUT_MS = 10_000;
const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

/** A Prisma client over node-postgres (`@prisma/adapter-pg`) with a bounded pool. */
export function createPrismaClient(databaseUrl: string, options: PrismaClientOptions = {}): PrismaClient {
  const adapter = new PrismaPg(
    {
      connectionString: databaseUrl,
      max: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      connectionTimeoutMillis: options.connectionTimeoutMs ?? DEFAULT_CONNECTION_TIMEOUT_MS,
      idleTimeoutMillis: options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      application_name: 'corral',
    },
    // The adapter already keeps such errors from crashing the process; this
    // only lets the caller see them.
    { onPoolError: options.onConnectionError, onConnectionError: options.onConnectionError },
  );
  return new PrismaClient({ adapter });
}

/** Closes the client's pool; the client must not be used afterwards. */
export async function disconnect(prisma: PrismaClient): Promise<void> {
  await prisma.$disconnect();
}

/**
 * Whether `error` is Prisma's unique-constraint violation (P2002), e.g. a
 * second team with the same name. Checked by code rather than `instanceof` so
 * it also holds for errors that crossed a second copy of the Prisma runtime.
 */
export function isUniqueViolation(error: unknown): boolean {
  if (error instanceof Prisma.PrismaClientKnownRequestError) return error.code === 'P2002';
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as { name?: unknown }).name === 'PrismaClientKnownRequestError' &&
    (error as { code?: unknown }).code === 'P2002'
  );
}
