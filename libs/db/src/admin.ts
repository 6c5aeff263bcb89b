import pg from 'pg';

// Unquoted-identifier rules, kept narrow so a name can never need escaping
// and means the same to Postgres as to the caller.
const DATABASE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

function assertDatabaseName(name: string): void {
  if (!DATABASE_NAME.test(name)) {
    throw new Error(`invalid database name ${JSON.stringify(name)}: use lowercase letters, digits and _ (max 63)`);
  }
}

/** The URL of database `name` on the same server, with the same credentials and parameters. */
export function databaseUrlFor(serverUrl: string, name: string): string {
  assertDatabaseName(name);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function withServerConnection<T>(serverUrl: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: serverUrl, application_name: 'corral-admin' });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/**
 * Creates database `name` on the server `serverUrl` points at (any database
 * there will do to connect through) and returns its URL.
 */
export async function createDatabase(serverUrl: string, name: string): Promise<string> {
  assertDatabaseName(name);
  await withServerConnection(serverUrl, (client) => client.query(`CREATE DATABASE "${name}"`));
  return databaseUrlFor(serverUrl, name);
}

/**
 * Drops database `name` if it exists, disconnecting whoever is still
 * connected to it (Postgres 13+).
 */
export async function dropDatabase(serverUrl: string, name: string): Promise<void> {
  assertDatabaseName(name);
  await withServerConnection(serverUrl, (client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
}
