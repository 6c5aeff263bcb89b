// Spec helpers for libs/db's own Postgres tests, over ../throwaway (libs/db
// cannot use @corral/testing, which depends on it).
import pg from 'pg';
import { testServerUnavailableReason } from '../throwaway/throwaway-database';

/** `describe`, or `describe.skip` with the reason printed when there is no test server. */
export function describeWithPostgres(name: string, body: () => void): void {
  const reason = testServerUnavailableReason();
  if (reason) console.log(`[skip] ${name}: ${reason}`);
  (reason ? describe.skip : describe)(name, body);
}

/** Runs one statement on its own connection and returns the rows. */
export async function queryRows<T extends pg.QueryResultRow>(
  databaseUrl: string,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}
