import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describeWithPostgres, queryRows } from '../test-support/postgres';
import { createThrowawayDatabase, ThrowawayDatabase } from '../throwaway/throwaway-database';
import { applyMigrations } from './apply-migrations';
import { MigrationApplyError, MigrationChecksumMismatchError, MigrationPreviouslyFailedError } from './errors';
import { defaultMigrationsDir, sha256Hex } from './migration-files';

interface MigrationRow {
  id: string;
  checksum: string;
  migration_name: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
  started_at: Date;
  applied_steps_count: number;
  logs: string | null;
}

const repoMigrationsDir = defaultMigrationsDir();

async function repoMigrationNames(): Promise<string[]> {
  return (await readdir(repoMigrationsDir, { withFileTypes: true }))
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
}

function migrationRows(url: string): Promise<MigrationRow[]> {
  return queryRows<MigrationRow>(url, 'SELECT * FROM _prisma_migrations ORDER BY started_at, migration_name');
}

describeWithPostgres('applyMigrations (Postgres)', () => {
  let database: ThrowawayDatabase;
  let scratchDir: string;

  beforeEach(async () => {
    database = await createThrowawayDatabase({ migrations: false });
    scratchDir = await mkdtemp(path.join(os.tmpdir(), 'corral-migrations-'));
  });

  afterEach(async () => {
    await database.drop();
    await rm(scratchDir, { recursive: true, force: true });
  });

  /** A private copy of the repo's migrations that a test may change. */
  async function copyOfRepoMigrations(): Promise<string> {
    const dir = path.join(scratchDir, 'migrations');
    await cp(repoMigrationsDir, dir, { recursive: true });
    return dir;
  }

  it('applies every migration and records it the way prisma migrate deploy does', async () => {
    const names = await repoMigrationNames();

    const result = await applyMigrations(database.url, { migrationsDir: repoMigrationsDir });

    expect(result.applied).toEqual(names);
    const rows = await migrationRows(database.url);
    expect(rows.map((row) => row.migration_name)).toEqual(names);
    for (const row of rows) {
      const sql = await readFile(path.join(repoMigrationsDir, row.migration_name, 'migration.sql'), 'utf8');
      expect(row.checksum).toBe(sha256Hex(sql));
      expect(row.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(row.finished_at).toBeInstanceOf(Date);
      expect(row.finished_at?.getTime()).toBeGreaterThanOrEqual(row.started_at.getTime());
      expect(row.rolled_back_at).toBeNull();
      expect(row.applied_steps_count).toBe(1);
      expect(row.logs).toBeNull();
    }
    const tables = await queryRows<{ table_name: string }>(
      database.url,
      `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
    );
    expect(tables.map((table) => table.table_name)).toEqual(
      expect.arrayContaining(['teams', 'api_keys', 'hosts', 'registration_tokens', 'workloads', 'workload_events']),
    );
  });

  it('is a no-op when applied a second time', async () => {
    await applyMigrations(database.url, { migrationsDir: repoMigrationsDir });
    const before = await migrationRows(database.url);

    const second = await applyMigrations(database.url, { migrationsDir: repoMigrationsDir });

    expect(second.applied).toEqual([]);
    expect(await migrationRows(database.url)).toEqual(before);
  });

  it('lets concurrent runners on a fresh database all succeed, recording each migration once', async () => {
    const names = await repoMigrationNames();

    const results = await Promise.all([
      applyMigrations(database.url, { migrationsDir: repoMigrationsDir }),
      applyMigrations(database.url, { migrationsDir: repoMigrationsDir }),
      applyMigrations(database.url, { migrationsDir: repoMigrationsDir }),
    ]);

    expect(results.flatMap((result) => result.applied).sort()).toEqual(names);
    const rows = await migrationRows(database.url);
    expect(rows.map((row) => row.migration_name)).toEqual(names);
  });

  it('refuses, naming the migration, when an applied migration file was changed', async () => {
    const migrationsDir = await copyOfRepoMigrations();
    await applyMigrations(database.url, { migrationsDir });
    const [first] = await repoMigrationNames();
    await writeFile(
      path.join(migrationsDir, first, 'migration.sql'),
      (await readFile(path.join(migrationsDir, first, 'migration.sql'), 'utf8')) + '\n-- edited afterwards\n',
    );

    const attempt = applyMigrations(database.url, { migrationsDir });

    await expect(attempt).rejects.toBeInstanceOf(MigrationChecksumMismatchError);
    await expect(attempt).rejects.toMatchObject({ migrationName: first });
  });

  it('accepts a migration whose only change is CRLF line endings, as Prisma does', async () => {
    const migrationsDir = await copyOfRepoMigrations();
    await applyMigrations(database.url, { migrationsDir });
    const [first] = await repoMigrationNames();
    const file = path.join(migrationsDir, first, 'migration.sql');
    await writeFile(file, (await readFile(file, 'utf8')).replace(/\n/g, '\r\n'));

    await expect(applyMigrations(database.url, { migrationsDir })).resolves.toEqual({ applied: [] });
  });

  it('refuses while an earlier attempt is recorded as failed', async () => {
    await applyMigrations(database.url, { migrationsDir: repoMigrationsDir });
    await queryRows(
      database.url,
      `INSERT INTO _prisma_migrations (id, checksum, migration_name, logs)
       VALUES ('00000000-0000-4000-8000-000000000000', 'x', '29990101000000_half_done', 'boom')`,
    );

    const attempt = applyMigrations(database.url, { migrationsDir: repoMigrationsDir });

    await expect(attempt).rejects.toBeInstanceOf(MigrationPreviouslyFailedError);
    await expect(attempt).rejects.toMatchObject({ migrationName: '29990101000000_half_done', logs: 'boom' });
  });

  it('applies again a migration that was marked rolled back', async () => {
    await applyMigrations(database.url, { migrationsDir: repoMigrationsDir });
    const migrationsDir = await copyOfRepoMigrations();
    const extra = '29990101000000_add_note';
    await mkdir(path.join(migrationsDir, extra));
    await writeFile(path.join(migrationsDir, extra, 'migration.sql'), 'CREATE TABLE "notes" ("id" TEXT NOT NULL);\n');
    await applyMigrations(database.url, { migrationsDir });
    // What `prisma migrate resolve --rolled-back` leaves after someone undid it by hand.
    await queryRows(database.url, 'DROP TABLE "notes"');
    await queryRows(database.url, `UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = $1`, [extra]);

    const result = await applyMigrations(database.url, { migrationsDir });

    expect(result.applied).toEqual([extra]);
    const rows = (await migrationRows(database.url)).filter((row) => row.migration_name === extra);
    expect(rows.map((row) => row.rolled_back_at === null)).toEqual([false, true]);
  });

  it('rolls a failing migration back completely and reports it by name', async () => {
    const migrationsDir = await copyOfRepoMigrations();
    const broken = '29990101000000_broken';
    await mkdir(path.join(migrationsDir, broken));
    await writeFile(
      path.join(migrationsDir, broken, 'migration.sql'),
      'CREATE TABLE "created_before_failure" ("id" TEXT);\nSELECT * FROM "no_such_table";\n',
    );

    const attempt = applyMigrations(database.url, { migrationsDir });

    await expect(attempt).rejects.toBeInstanceOf(MigrationApplyError);
    await expect(attempt).rejects.toMatchObject({ migrationName: broken });
    const rows = await migrationRows(database.url);
    expect(rows.map((row) => row.migration_name)).toEqual(await repoMigrationNames());
    const leftovers = await queryRows(
      database.url,
      `SELECT 1 FROM information_schema.tables WHERE table_name = 'created_before_failure'`,
    );
    expect(leftovers).toEqual([]);

    // Nothing was recorded, so once fixed it applies on the next start.
    await writeFile(path.join(migrationsDir, broken, 'migration.sql'), 'CREATE TABLE "created_before_failure" ("id" TEXT);\n');
    await expect(applyMigrations(database.url, { migrationsDir })).resolves.toEqual({ applied: [broken] });
  });

  it('warns about applied migrations this build does not have, and goes on', async () => {
    const migrationsDir = await copyOfRepoMigrations();
    const newer = '29990101000000_from_a_newer_build';
    await mkdir(path.join(migrationsDir, newer));
    await writeFile(path.join(migrationsDir, newer, 'migration.sql'), 'SELECT 1;\n');
    await applyMigrations(database.url, { migrationsDir });
    const warnings: unknown[] = [];

    const result = await applyMigrations(database.url, {
      migrationsDir: repoMigrationsDir,
      logger: { info: () => undefined, warn: (message, fields) => warnings.push({ message, fields }) },
    });

    expect(result.applied).toEqual([]);
    expect(warnings).toEqual([expect.objectContaining({ fields: { migrations: [newer] } })]);
  });
});
