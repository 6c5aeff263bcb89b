// Postgres helpers for apps' tests: a throw-away, migrated database per test
// file (or per test), with a Prisma client on it. Which server, and how the
// database is made and dropped, is decided in @corral/db (its throw-away
// databases); this adds the client and Jest's describe/skip. Database access
// goes through @corral/db only: pg and the Prisma client are not imported
// outside libs/db.

import {
  createPrismaClient,
  createThrowawayDatabase,
  disconnect,
  PrismaClient,
  testServerUnavailableReason,
} from '@corral/db';
import { describeIfAvailable } from './describe-if-available';

export interface TestDatabase {
  /** URL of the new database, e.g. to hand to the service under test. */
  url: string;
  /** A client on it, already migrated. */
  prisma: PrismaClient;
  /** Disconnects `prisma` and drops the database, whoever is still connected. */
  drop(): Promise<void>;
}

export interface CreateTestDatabaseOptions {
  /** Migrations to apply; the repository's prisma/migrations by default. */
  migrationsDir?: string;
}

/** Why database tests cannot run here, or undefined when they can. */
export function databaseUnavailableReason(): string | undefined {
  return testServerUnavailableReason();
}

/** Whether createTestDatabase has a server to work with. */
export function hasDatabase(): boolean {
  return databaseUnavailableReason() === undefined;
}

/** `describe` when there is a Postgres server to test against; `describe.skip`, with the reason printed, otherwise. */
export function describeWithDatabase(name: string, fn: () => void): void {
  describeIfAvailable(name, databaseUnavailableReason(), fn);
}

/**
 * Creates a uniquely named database (`corral_t_<random>`) on the test server,
 * applies the migrations and returns a client on it. Call `drop()` when done
 * (e.g. in afterAll).
 */
export async function createTestDatabase(options: CreateTestDatabaseOptions = {}): Promise<TestDatabase> {
  const database = await createThrowawayDatabase({ migrations: { migrationsDir: options.migrationsDir } });
  let prisma: PrismaClient;
  try {
    prisma = createPrismaClient(database.url, { maxConnections: 5 });
  } catch (error) {
    await database.drop();
    throw error;
  }
  let dropping: Promise<void> | undefined;
  return {
    url: database.url,
    prisma,
    drop() {
      dropping ??= (async () => {
        try {
          await disconnect(prisma);
        } finally {
          await database.drop();
        }
      })();
      return dropping;
    },
  };
}
