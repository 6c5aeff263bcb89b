// Needs no database server: the point of the embedded one is that it runs
// anywhere, so these always run. The first start runs initdb in wasm, which
// takes several seconds on a small machine.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createPrismaClient, disconnect } from '../client';
import pg from 'pg';
import { applyMigrations } from '../migrations/apply-migrations';
import { defaultMigrationsDir, readMigrationFiles } from '../migrations/migration-files';
import { queryRows } from '../test-support/postgres';
import { EmbeddedPostgres, startEmbeddedPostgres } from './embedded-postgres';

const SLOW = 120_000;

describe('startEmbeddedPostgres', () => {
  let parentDir: string;
  let dataDir: string;
  let running: EmbeddedPostgres | undefined;

  beforeAll(async () => {
    parentDir = await mkdtemp(path.join(os.tmpdir(), 'corral-embedded-'));
    dataDir = path.join(parentDir, 'pgdata');
  });

  afterAll(async () => {
    await running?.stop();
    await rm(parentDir, { recursive: true, force: true });
  });

  it(
    'serves a migrated database that Prisma reads, writes and writes to concurrently',
    async () => {
      running = await startEmbeddedPostgres({ dataDir });
      expect(running.url).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);

      // Two services starting at once against the embedded server: each
      // migration is applied by exactly one of them.
      const migrationNames = (await readMigrationFiles(defaultMigrationsDir())).map((migration) => migration.name);
      const runs = await Promise.all([applyMigrations(running.url), applyMigrations(running.url)]);
      expect(runs.flatMap((run) => run.applied).sort()).toEqual(migrationNames);
      const recorded = await queryRows<{ migration_name: string }>(
        running.url,
        'SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL ORDER BY migration_name',
      );
      expect(recorded.map((row) => row.migration_name)).toEqual(migrationNames);

      const prisma = createPrismaClient(running.url, { maxConnections: 8 });
      try {
        const team = await prisma.team.create({ data: { name: 'embedded' } });
        const host = await prisma.host.create({
          data: { name: 'local', agentAddress: '127.0.0.1:7443', capacity: { cpuMillis: 2000 }, lastSeq: 5n },
        });
        expect(await prisma.team.findUnique({ where: { id: team.id } })).toEqual(team);
        expect((await prisma.host.findUniqueOrThrow({ where: { id: host.id } })).lastSeq).toBe(5n);

        const names = Array.from({ length: 20 }, (_, index) => `concurrent-${index}`);
        const created = await Promise.all(
          names.map((name, index) =>
            index % 2 === 0
              ? prisma.workload.create({ data: { name, teamId: team.id, driver: 'process', command: [name] } })
              : // Interactive transactions hold one pooled connection across
                // statements; the server must not interleave others into them.
                prisma.$transaction(async (tx) => {
                  const workload = await tx.workload.create({ data: { name, teamId: team.id, driver: 'process' } });
                  await tx.workloadEvent.create({ data: { workloadId: workload.id, type: 'created', message: name } });
                  return tx.workload.update({ where: { id: workload.id }, data: { command: [name] } });
                }),
          ),
        );
        expect(created.map((workload) => workload.name)).toEqual(names);
        const stored = await prisma.workload.findMany({ where: { teamId: team.id }, orderBy: { name: 'asc' } });
        expect(stored).toHaveLength(20);
        for (const workload of stored) expect(workload.command).toEqual([workload.name]);
        expect(await prisma.workloadEvent.count()).toBe(10);
      } finally {
        await disconnect(prisma);
      }
      await running.stop();
      running = undefined;
    },
    SLOW,
  );

  it(
    'keeps the data across a restart on the same directory',
    async () => {
      running = await startEmbeddedPostgres({ dataDir });

      expect(await applyMigrations(running.url)).toEqual({ applied: [] });
      const prisma = createPrismaClient(running.url);
      try {
        expect(await prisma.team.findUnique({ where: { name: 'embedded' } })).not.toBeNull();
        expect(await prisma.workload.count()).toBe(20);
      } finally {
        await disconnect(prisma);
      }
    },
    SLOW,
  );

  it(
    'rolls back the transaction of a client that goes away in it, without holding up the others',
    async () => {
      if (!running) throw new Error('the previous test leaves the server running');
      const { url } = running;
      const abandoning = new pg.Client({ connectionString: url });
      abandoning.on('error', () => undefined);
      await abandoning.connect();
      await abandoning.query('BEGIN');
      await abandoning.query(`INSERT INTO teams (id, name) VALUES ('abandoned', 'abandoned')`);
      // A failed statement leaves the transaction open (aborted) until ROLLBACK.
      await expect(abandoning.query('SELECT no_such_column FROM teams')).rejects.toThrow(/no_such_column/);

      // Queued behind the open transaction, then served once it is gone.
      const othersQuery = queryRows<{ count: string }>(url, 'SELECT count(*) FROM teams');
      abandoning.connection.stream.destroy();

      expect(await othersQuery).toEqual([{ count: '1' }]);
      expect(await queryRows(url, `SELECT 1 FROM teams WHERE id = 'abandoned'`)).toEqual([]);
    },
    SLOW,
  );

  it(
    'refuses to open a data directory that is already open',
    async () => {
      expect(running).toBeDefined();

      await expect(startEmbeddedPostgres({ dataDir })).rejects.toThrow(/in use by process/);
    },
    SLOW,
  );
});
