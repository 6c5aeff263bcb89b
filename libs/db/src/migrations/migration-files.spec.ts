import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { InvalidMigrationError } from './errors';
import { checksumMatches, defaultMigrationsDir, readMigrationFiles, sha256Hex } from './migration-files';

describe('checksumMatches', () => {
  const sql = 'CREATE TABLE "a" ("id" TEXT);\nCREATE TABLE "b" ("id" TEXT);\n';

  it('matches the sha256 hex of the script', () => {
    expect(checksumMatches(sha256Hex(sql), sql)).toBe(true);
  });

  it('matches across CRLF/LF rewrites in either direction', () => {
    const crlf = sql.replace(/\n/g, '\r\n');
    expect(checksumMatches(sha256Hex(sql), crlf)).toBe(true);
    expect(checksumMatches(sha256Hex(crlf), sql)).toBe(true);
  });

  it("matches the unpadded hex that early Prisma versions recorded", () => {
    const unpadded = Array.from(Buffer.from(sha256Hex(sql), 'hex'), (byte) => byte.toString(16)).join('');
    expect(checksumMatches(unpadded, sql)).toBe(true);
  });

  it('does not match a changed script', () => {
    expect(checksumMatches(sha256Hex(sql), sql + '-- more\n')).toBe(false);
    expect(checksumMatches(sha256Hex(sql), sql.replace('"b"', '"c"'))).toBe(false);
  });
});

describe('readMigrationFiles', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corral-migration-files-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function addMigration(name: string, sql: string): Promise<void> {
    await mkdir(path.join(dir, name));
    await writeFile(path.join(dir, name, 'migration.sql'), sql);
  }

  it('lists migration directories in name order with their checksums, ignoring loose files', async () => {
    await addMigration('20250102000000_second', 'SELECT 2;\n');
    await addMigration('20250101000000_first', 'SELECT 1;\n');
    await writeFile(path.join(dir, 'migration_lock.toml'), 'provider = "postgresql"\n');

    const migrations = await readMigrationFiles(dir);

    expect(migrations).toEqual([
      { name: '20250101000000_first', sql: 'SELECT 1;\n', checksum: sha256Hex('SELECT 1;\n') },
      { name: '20250102000000_second', sql: 'SELECT 2;\n', checksum: sha256Hex('SELECT 2;\n') },
    ]);
  });

  it('refuses a migration directory without migration.sql, naming it', async () => {
    await mkdir(path.join(dir, '20250101000000_empty'));

    const reading = readMigrationFiles(dir);

    await expect(reading).rejects.toBeInstanceOf(InvalidMigrationError);
    await expect(reading).rejects.toMatchObject({ migrationName: '20250101000000_empty' });
  });
});

describe('defaultMigrationsDir', () => {
  it("finds the repository's prisma/migrations", async () => {
    const dir = defaultMigrationsDir();

    expect(dir).toBe(path.resolve(__dirname, '../../../../prisma/migrations'));
    expect(await readFile(path.join(dir, 'migration_lock.toml'), 'utf8')).toContain('provider = "postgresql"');
  });
});

describe('the committed migrations', () => {
  it('use the layout prisma migrate writes: <14-digit timestamp>_<name>/migration.sql', async () => {
    const migrations = await readMigrationFiles(defaultMigrationsDir());

    expect(migrations.length).toBeGreaterThan(0);
    for (const migration of migrations) expect(migration.name).toMatch(/^\d{14}_[a-z0-9_]+$/);
  });
});
