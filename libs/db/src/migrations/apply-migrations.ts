import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { MigrationApplyError, MigrationChecksumMismatchError, MigrationPreviouslyFailedError } from './errors';
import { checksumMatches, defaultMigrationsDir, MigrationFile, readMigrationFiles } from './migration-files';

/** Structurally a subset of @corral/logging's Logger, so services pass theirs. */
export interface MigrationLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

export interface ApplyMigrationsOptions {
  /** Folder laid out like `prisma/migrations`; found by walking up from here when omitted. */
  migrationsDir?: string;
  logger?: MigrationLogger;
}

export interface ApplyMigrationsResult {
  /** Migrations this call applied, in order; empty when the database was up to date. */
  applied: string[];
}

// The key `prisma migrate` itself locks (schema-engine, postgres flavour), so
// this runner and `prisma migrate deploy` also exclude each other.
const PRISMA_MIGRATE_LOCK_KEY = 72707369;

// Prisma's own DDL for its bookkeeping table, so either runner can pick up
// where the other left off.
const CREATE_MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)`;

interface MigrationRecord {
  id: string;
  checksum: string;
  migration_name: string;
  logs: string | null;
  started_at: Date;
  finished_at: Date | null;
  rolled_back_at: Date | null;
}

const silentLogger: MigrationLogger = { info: () => undefined, warn: () => undefined };

/**
 * Applies every migration under `migrationsDir` that the database has not
 * recorded, keeping `_prisma_migrations` exactly as `prisma migrate deploy`
 * does, so the two are interchangeable.
 *
 * Each migration runs in its own transaction, which first takes a
 * transaction-scoped advisory lock and only then reads `_prisma_migrations`.
 * Services starting together therefore queue on the lock and each re-reads
 * what the previous one committed. The lock is transaction-scoped rather than
 * held by the session because the embedded PGlite server multiplexes all
 * connections onto one Postgres session, where a session lock would be
 * granted to every caller; it does run one transaction at a time, so the
 * transaction is the unit that excludes there.
 *
 * A failed migration is rolled back with its bookkeeping row and reported as
 * MigrationApplyError; nothing is recorded, so it is retried on the next
 * start. For the same reason a migration must not contain its own
 * BEGIN/COMMIT, nor statements Postgres refuses inside a transaction
 * (CREATE INDEX CONCURRENTLY, ...); what `prisma migrate dev` writes has
 * neither.
 */
export async function applyMigrations(
  databaseUrl: string,
  options: ApplyMigrationsOptions = {},
): Promise<ApplyMigrationsResult> {
  const logger = options.logger ?? silentLogger;
  const migrationsDir = options.migrationsDir ?? defaultMigrationsDir();
  const migrations = await readMigrationFiles(migrationsDir);

  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'corral-migrations' });
  // Without a listener, a connection dropped between queries would be an
  // uncaught 'error' event; the pending query rejects on its own.
  client.on('error', (error) => logger.warn('migrations connection error', { error: error.message }));
  await client.connect();
  try {
    const applied: string[] = [];
    let warnedAboutUnknown = false;
    for (;;) {
      const appliedName = await inLockedTransaction(client, async () => {
        const records = await readMigrationRecords(client);
        verifyHistory(migrations, records);
        if (!warnedAboutUnknown) {
          warnAboutUnknownMigrations(migrations, records, logger);
          warnedAboutUnknown = true;
        }
        const pending = migrations.find((migration) => !isApplied(migration.name, records));
        if (!pending) return null;
        await applyOne(client, pending, logger);
        return pending.name;
      });
      if (appliedName === null) break;
      applied.push(appliedName);
    }
    if (applied.length === 0) logger.info('database schema is up to date', { migrations: migrations.length });
    return { applied };
  } finally {
    await client.end();
  }
}

async function inLockedTransaction<T>(client: pg.Client, work: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [PRISMA_MIGRATE_LOCK_KEY]);
    // Under the lock, so two first-ever runs cannot race to create it.
    await client.query(CREATE_MIGRATIONS_TABLE);
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    // The connection may be gone; the original error is the one worth reporting.
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

async function readMigrationRecords(client: pg.Client): Promise<MigrationRecord[]> {
  const result = await client.query<MigrationRecord>(
    `SELECT id, checksum, migration_name, logs, started_at, finished_at, rolled_back_at
       FROM _prisma_migrations
      ORDER BY started_at, migration_name`,
  );
  return result.rows;
}

function isApplied(name: string, records: MigrationRecord[]): boolean {
  return records.some((record) => record.migration_name === name && isAppliedRecord(record));
}

function isAppliedRecord(record: MigrationRecord): boolean {
  return record.finished_at !== null && record.rolled_back_at === null;
}

function isFailedRecord(record: MigrationRecord): boolean {
  return record.finished_at === null && record.rolled_back_at === null;
}

/** Refuses to go on from a history that does not match the files (see errors.ts). */
function verifyHistory(migrations: MigrationFile[], records: MigrationRecord[]): void {
  const failed = records.find(isFailedRecord);
  if (failed) throw new MigrationPreviouslyFailedError(failed.migration_name, failed.started_at, failed.logs);

  const filesByName = new Map(migrations.map((migration) => [migration.name, migration]));
  for (const record of records.filter(isAppliedRecord)) {
    const file = filesByName.get(record.migration_name);
    if (file && !checksumMatches(record.checksum, file.sql)) {
      throw new MigrationChecksumMismatchError(record.migration_name, record.checksum, file.checksum);
    }
  }
}

// A database migrated by a newer build than this one is normal during a
// rolling deploy, so unknown migrations are reported, not refused.
function warnAboutUnknownMigrations(
  migrations: MigrationFile[],
  records: MigrationRecord[],
  logger: MigrationLogger,
): void {
  const known = new Set(migrations.map((migration) => migration.name));
  const unknown = records.filter(isAppliedRecord).filter((record) => !known.has(record.migration_name));
  if (unknown.length > 0) {
    logger.warn('database has migrations this build does not know about', {
      migrations: unknown.map((record) => record.migration_name),
    });
  }
}

async function applyOne(client: pg.Client, migration: MigrationFile, logger: MigrationLogger): Promise<void> {
  const id = randomUUID();
  const startedAt = Date.now();
  logger.info('applying migration', { migration: migration.name });
  // clock_timestamp(), not now(): inside one transaction now() is frozen, and
  // the recorded start and finish should show how long the migration took.
  await client.query(
    `INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name)
     VALUES ($1, $2, clock_timestamp(), $3)`,
    [id, migration.checksum, migration.name],
  );
  try {
    // No parameters: pg sends it as a simple query, which may hold many statements.
    await client.query(migration.sql);
  } catch (error) {
    throw new MigrationApplyError(migration.name, error);
  }
  await client.query(
    `UPDATE _prisma_migrations
        SET finished_at = clock_timestamp(), applied_steps_count = applied_steps_count + 1
      WHERE id = $1`,
    [id],
  );
  logger.info('applied migration', { migration: migration.name, durationMs: Date.now() - startedAt });
}
