import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { InvalidMigrationError } from './errors';

/** One `prisma/migrations/<name>/migration.sql`, as `prisma migrate` lays it out. */
export interface MigrationFile {
  /** The directory name, e.g. `20250101000000_init`; also the `migration_name` recorded. */
  name: string;
  sql: string;
  /** sha256 hex of the file's bytes, as Prisma records it. */
  checksum: string;
}

const MIGRATION_SCRIPT = 'migration.sql';
// Written by `prisma migrate dev`; its presence tells a migrations folder
// apart from any other `prisma/migrations` directory on the way up.
const LOCK_FILE = 'migration_lock.toml';

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/**
 * Whether a recorded checksum matches a migration script. Mirrors Prisma's own
 * rule (schema-engine `checksum.rs`) so that the two runners agree: git may
 * have rewritten line endings since the migration was applied, and early
 * Prisma versions stored the hex digest without zero-padding each byte.
 */
export function checksumMatches(recordedChecksum: string, sql: string): boolean {
  const candidates = [sql, sql.replace(/\r\n/g, '\n'), sql.replace(/\n/g, '\r\n')];
  return candidates.some((script) => {
    const digest = createHash('sha256').update(script, 'utf8').digest();
    return (
      digest.toString('hex') === recordedChecksum ||
      Array.from(digest, (byte) => byte.toString(16)).join('') === recordedChecksum
    );
  });
}

/** Every migration under `migrationsDir`, in name order (the order Prisma applies them). */
export async function readMigrationFiles(migrationsDir: string): Promise<MigrationFile[]> {
  const entries = await readdir(migrationsDir, { withFileTypes: true });
  const names = entries
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return Promise.all(
    names.map(async (name) => {
      let sql: string;
      try {
        sql = await readFile(path.join(migrationsDir, name, MIGRATION_SCRIPT), 'utf8');
      } catch (error) {
        throw new InvalidMigrationError(name, `cannot read ${MIGRATION_SCRIPT}`, { cause: error });
      }
      return { name, sql, checksum: sha256Hex(sql) };
    }),
  );
}

/**
 * Where the migrations are when the caller does not say: the nearest
 * `prisma/migrations` holding a `migration_lock.toml`, looking up from this
 * module (the repo checkout, or a bundle shipped beside the folder) and then
 * from the working directory.
 */
export function defaultMigrationsDir(): string {
  for (const start of [__dirname, process.cwd()]) {
    for (let dir = path.resolve(start); ; dir = path.dirname(dir)) {
      const candidate = path.join(dir, 'prisma', 'migrations');
      if (existsSync(path.join(candidate, LOCK_FILE))) return candidate;
      if (path.dirname(dir) === dir) break;
    }
  }
  throw new Error(
    `no prisma/migrations/${LOCK_FILE} found above ${__dirname} or ${process.cwd()}; pass migrationsDir explicitly`,
  );
}
