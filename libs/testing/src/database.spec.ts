import { createPrismaClient, disconnect } from '@corral/db';
import { createTestDatabase, databaseUnavailableReason, describeWithDatabase, hasDatabase, TestDatabase } from './database';

describe('database availability', () => {
  it('is explained exactly when it is missing', () => {
    expect(hasDatabase()).toBe(databaseUnavailableReason() === undefined);
    if (!hasDatabase()) expect(databaseUnavailableReason()).toMatch(/DATABASE_URL is not set/);
  });
});

describeWithDatabase('createTestDatabase', () => {
  const created: TestDatabase[] = [];

  afterAll(async () => {
    await Promise.all(created.map((database) => database.drop()));
  });

  it('gives each caller its own migrated database', async () => {
    const [first, second] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    created.push(first, second);

    expect(first.url).not.toBe(second.url);
    expect(first.url).toMatch(/\/corral_t_[0-9a-f]{16}(\?|$)/);
    await first.prisma.team.create({ data: { name: 'only-in-first' } });
    expect(await first.prisma.team.count()).toBe(1);
    expect(await second.prisma.team.count()).toBe(0);
  });

  it('drops the database, even while another client is still connected to it', async () => {
    const database = await createTestDatabase();
    const holder = createPrismaClient(database.url, { maxConnections: 1 });
    // Leaves one pooled connection open on the database.
    expect(await holder.team.count()).toBe(0);

    await database.drop();
    await database.drop(); // a second call is harmless

    await expect(holder.team.count()).rejects.toThrow();
    await disconnect(holder);
  });
});
