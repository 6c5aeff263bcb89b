// The only way into the database for the rest of Corral: the generated Prisma
// client and its types, the client factory, the migrations runner, the
// embedded server and, for tests, throw-away databases. Nothing outside
// libs/db imports @prisma/client, pg or the generated code directly.

export { PrismaClient, Prisma } from './generated/prisma/client';
export type { ApiKey, Host, RegistrationToken, Team, Workload, WorkloadEvent } from './generated/prisma/client';
export type { AuditEvent, ReconcilerLeader } from './generated/prisma/client';
export type { Deployment, IdempotencyKey, Service, ServiceComponent, ServiceVersion } from './generated/prisma/client';

export { appendAuditEvent } from './audit/audit-trail';
export type { AuditEntry, AuditKind, AuditOutcome, StoredAuditEvent } from './audit/audit-trail';

export { createPrismaClient, disconnect, isUniqueViolation } from './client';
export type { PrismaClientOptions } from './client';

export { applyMigrations } from './migrations/apply-migrations';
export type { ApplyMigrationsOptions, ApplyMigrationsResult, MigrationLogger } from './migrations/apply-migrations';
export {
  InvalidMigrationError,
  MigrationApplyError,
  MigrationChecksumMismatchError,
  MigrationError,
  MigrationPreviouslyFailedError,
} from './migrations/errors';
export { defaultMigrationsDir } from './migrations/migration-files';

export { openSessionLock } from './locks/session-lock';
export type { SessionLock, SessionLockOptions } from './locks/session-lock';

export { startEmbeddedPostgres } from './embedded/embedded-postgres';
export type { EmbeddedPostgres, EmbeddedPostgresOptions } from './embedded/embedded-postgres';

export { createThrowawayDatabase, resolveTestServerUrl, testServerUnavailableReason } from './throwaway/throwaway-database';
export type { ThrowawayDatabase, ThrowawayDatabaseOptions } from './throwaway/throwaway-database';
