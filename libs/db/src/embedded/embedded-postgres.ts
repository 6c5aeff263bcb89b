import { mkdir, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { PGLITE_WORKER_SOURCE } from './pglite-worker-source';

export interface EmbeddedPostgresOptions {
  /** Where the database files live; created on first start, reused afterwards. */
  dataDir: string;
  /** TCP port to listen on; 0 (the default) lets the OS pick a free one. */
  port?: number;
  /** Address to bind; loopback by default, since there is no authentication. */
  host?: string;
  /**
   * Client connections served at once. PGlite runs one query at a time, so
   * these share it; the server keeps each transaction's statements together.
   */
  maxConnections?: number;
  /** Told if the database stops on its own after it started (e.g. it crashed). */
  onUnexpectedExit?: (error: Error) => void;
}

export interface EmbeddedPostgres {
  /** postgres:// URL for pg, @prisma/adapter-pg and applyMigrations. */
  url: string;
  /** Stops listening, then closes the database so everything is on disk. */
  stop(): Promise<void>;
}

const DEFAULT_MAX_CONNECTIONS = 64;
// PGlite serves a single built-in database and role.
const DATABASE = 'postgres';
const USER = 'postgres';

interface WorkerSettings {
  pglitePath: string;
  dataDir: string;
  port: number;
  host: string;
  maxConnections: number;
  database: string;
  user: string;
}

type WorkerMessage =
  | { type: 'listening'; host: string; port: number }
  | { type: 'stopped' }
  | { type: 'failed'; message: string; stack?: string };

/**
 * A real Postgres (PGlite, compiled to wasm) persisted under `dataDir` and
 * served over the Postgres wire protocol, for running Corral without a
 * database server. Not for production load: every query from every
 * connection runs on one single-threaded backend, and all connections share
 * one session (see pglite-worker-source.ts for what that rules out).
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const dataDir = path.resolve(options.dataDir);
  await mkdir(path.dirname(dataDir), { recursive: true });
  const releaseLock = await lockDataDir(dataDir);

  const settings: WorkerSettings = {
    pglitePath: require.resolve('@electric-sql/pglite'),
    dataDir,
    port: options.port ?? 0,
    host: options.host ?? '127.0.0.1',
    maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    database: DATABASE,
    user: USER,
  };
  // PGlite runs its queries synchronously in wasm; in a worker they do not
  // stall the service's own event loop. See pglite-worker-source.ts.
  const worker = new Worker(PGLITE_WORKER_SOURCE, { eval: true, workerData: settings });
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  // Whatever ends the worker, the directory is free again once it is gone.
  const released = exited.then(releaseLock);

  let phase: 'starting' | 'running' | 'stopping' | 'gone' = 'starting';
  const started = deferred<{ host: string; port: number }>();
  const stopped = deferred<void>();
  const fail = (error: Error) => {
    if (phase === 'starting') started.reject(error);
    else if (phase === 'stopping') stopped.reject(error);
    else if (phase === 'running') options.onUnexpectedExit?.(error);
    if (phase !== 'stopping') phase = 'gone';
  };
  worker.on('message', (message: WorkerMessage) => {
    if (message.type === 'listening') started.resolve({ host: message.host, port: message.port });
    else if (message.type === 'stopped') stopped.resolve();
    else fail(workerError(message));
  });
  worker.on('error', fail);
  void exited.then((code) => fail(new Error(`embedded database exited with code ${code}`)));

  let address: { host: string; port: number };
  try {
    address = await started.promise;
  } catch (error) {
    await worker.terminate();
    await released;
    throw error;
  }
  phase = 'running';

  let stopping: Promise<void> | undefined;
  return {
    url: `postgres://${USER}@${urlHost(address.host)}:${address.port}/${DATABASE}`,
    stop() {
      stopping ??= (async () => {
        if (phase === 'gone') return released;
        phase = 'stopping';
        worker.postMessage('stop');
        try {
          await stopped.promise;
        } finally {
          await worker.terminate();
          await released;
        }
      })();
      return stopping;
    },
  };
}

function deferred<T>(): { promise: Promise<T>; resolve(value: T): void; reject(error: Error): void } {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((onResolve, onReject) => {
    resolve = onResolve;
    reject = onReject;
  });
  // A rejection nobody awaits (e.g. an exit after a clean stop) is not an error.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

function workerError(message: { message: string; stack?: string }): Error {
  const error = new Error(`embedded database: ${message.message}`);
  if (message.stack) error.stack = `${error.message}\n${message.stack}`;
  return error;
}

// An IPv6 address needs brackets in a URL.
function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/**
 * Two PGlite instances writing one data directory corrupt it, and PGlite does
 * not guard against that itself, so a pid file beside the directory does.
 * A lock left by a process that no longer exists is taken over.
 */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const lockPath = `${dataDir}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(lockPath, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(lockPath, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(holder) && holder > 0 && isRunning(holder)) {
        throw new Error(`embedded database ${dataDir} is in use by process ${holder} (lock file ${lockPath})`);
      }
      await rm(lockPath, { force: true });
    }
  }
  throw new Error(`could not lock embedded database ${dataDir} (lock file ${lockPath})`);
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
