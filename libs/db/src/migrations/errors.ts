// Typed failures of the migrations runner. Each names the migration it is
// about, so an operator knows which directory under prisma/migrations to look
// at. A service that gets one of these must not start: its code expects a
// schema the database does not have.

export abstract class MigrationError extends Error {
  constructor(
    readonly migrationName: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * An applied migration's file has changed since it was applied, so the
 * database schema is not what the migration files describe.
 */
export class MigrationChecksumMismatchError extends MigrationError {
  override readonly name = 'MigrationChecksumMismatchError';

  constructor(
    migrationName: string,
    readonly recordedChecksum: string,
    readonly fileChecksum: string,
  ) {
    super(
      migrationName,
      `migration ${migrationName} was modified after it was applied ` +
        `(recorded checksum ${recordedChecksum}, file checksum ${fileChecksum})`,
    );
  }
}

/**
 * `_prisma_migrations` records an attempt that started and never finished
 * (finished_at and rolled_back_at both null), as `prisma migrate deploy`
 * leaves it when a migration fails half-way. Someone has to look at the
 * database, then mark it with `prisma migrate resolve --rolled-back` or
 * `--applied`.
 */
export class MigrationPreviouslyFailedError extends MigrationError {
  override readonly name = 'MigrationPreviouslyFailedError';

  constructor(
    migrationName: string,
    readonly startedAt: Date,
    readonly logs: string | null,
  ) {
    super(
      migrationName,
      `migration ${migrationName} failed in an earlier attempt started at ${startedAt.toISOString()}; ` +
        `resolve it (prisma migrate resolve --rolled-back|--applied ${migrationName}) before applying more`,
    );
  }
}

/** Running the migration's SQL failed; its transaction was rolled back. */
export class MigrationApplyError extends MigrationError {
  override readonly name = 'MigrationApplyError';

  constructor(migrationName: string, cause: unknown) {
    super(migrationName, `migration ${migrationName} failed and was rolled back: ${describe(cause)}`, { cause });
  }
}

/** A directory under the migrations folder is not a usable migration. */
export class InvalidMigrationError extends MigrationError {
  override readonly name = 'InvalidMigrationError';

  constructor(migrationName: string, reason: string, options?: { cause?: unknown }) {
    super(migrationName, `migration ${migrationName} is invalid: ${reason}`, options);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
