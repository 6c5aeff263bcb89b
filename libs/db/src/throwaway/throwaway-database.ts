// Throw-away databases for tests: the one place that decides which Postgres
// server tests use and how a private database is made and removed there.
// libs/db's own specs use it directly; everyone else through @corral/testing.
//
// The server is DATABASE_URL when that is set. Otherwise, where a Docker
// engine answers, one testcontainers Postgres is started per process (and
// removed by testcontainers' reaper when the process exits). testcontainers
// is a dev dependency, loaded only on that path, so production code that
// imports @corral/db never loads it.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import { createDatabase, dropDatabase } from '../admin';
import { applyMigrations } from '../migrations/apply-migrations';

const DOCKER_SOCKET = '/var/run/docker.sock';
const POSTGRES_IMAGE = 'postgres:16-alpine';

function databaseUrlFromEnv(): string | undefined {
  return process.env['DATABASE_URL']?.trim() || undefined;
}

function dockerConfigured(): boolean {
  return Boolean(process.env['DOCKER_HOST']) || existsSync(DOCKER_SOCKET);
}

/**
 * Why no test server can be had here, or undefined when
 * resolveTestServerUrl() has somewhere to look (DATABASE_URL, or a
 * configured Docker engine).
 */
export function testServerUnavailableReason(): string | undefined {
  if (databaseUrlFromEnv() || dockerConfigured()) return undefined;
  return 'DATABASE_URL is not set (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/test) and no Docker engine is configured';
}

function dockerEndpoint(): http.RequestOptions {
  const dockerHost = process.env['DOCKER_HOST'];
  if (dockerHost?.startsWith('tcp://')) {
    const url = new URL(`http://${dockerHost.slice('tcp://'.length)}`);
    return { host: url.hostname, port: url.port };
  }
  if (dockerHost?.startsWith('unix://')) return { socketPath: dockerHost.slice('unix://'.length) };
  return { socketPath: DOCKER_SOCKET };
}

function dockerAnswers(): Promise<boolean> {
  return new Promise((resolve) => {
    const request = http.get({ ...dockerEndpoint(), path: '/_ping', timeout: 2000 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(false));
  });
}

let containerServerUrl: Promise<string> | undefined;

async function startPostgresContainer(): Promise<string> {
  if (!(await dockerAnswers())) {
    throw new Error('DATABASE_URL is not set and the configured Docker engine does not answer');
  }
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const container = await new PostgreSqlContainer(POSTGRES_IMAGE).start();
  return container.getConnectionUri();
}

/**
 * The URL of the Postgres server tests create their databases on:
 * DATABASE_URL, or else a container started on first call and shared by
 * every later call in this process.
 */
export function resolveTestServerUrl(): Promise<string> {
  const fromEnv = databaseUrlFromEnv();
  if (fromEnv) return Promise.resolve(fromEnv);
  containerServerUrl ??= startPostgresContainer();
  return containerServerUrl;
}

export interface ThrowawayDatabaseOptions {
  /**
   * Migrations to apply: the repository's prisma/migrations by default (a
   * directory here picks others), or `false` for an empty database.
   */
  migrations?: false | { migrationsDir?: string };
}

export interface ThrowawayDatabase {
  /** URL of the new database. */
  url: string;
  /** Drops the database, disconnecting whoever is still connected to it. Safe to call again. */
  drop(): Promise<void>;
}

/**
 * Creates a uniquely named database (`corral_t_<16 hex>`) on the test
 * server, so tests never see each other's rows, and migrates it unless told
 * not to. The caller drops it when done (e.g. in afterAll).
 */
export async function createThrowawayDatabase(options: ThrowawayDatabaseOptions = {}): Promise<ThrowawayDatabase> {
  const serverUrl = await resolveTestServerUrl();
  const name = `corral_t_${randomBytes(8).toString('hex')}`;
  const url = await createDatabase(serverUrl, name);
  let dropping: Promise<void> | undefined;
  const drop = () => (dropping ??= dropDatabase(serverUrl, name));
  if (options.migrations !== false) {
    try {
      await applyMigrations(url, { migrationsDir: options.migrations?.migrationsDir });
    } catch (error) {
      await drop();
      throw error;
    }
  }
  return { url, drop };
}
