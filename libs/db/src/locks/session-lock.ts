import pg from 'pg';

/**
 * A Postgres session advisory lock held on its own connection, for electing
 * one leader among service replicas. The server releases the lock when the
 * connection ends, so a crashed or partitioned holder loses it without help;
 * the holder learns it through `onLost`, and must also fence its writes (the
 * lock alone cannot stop a write already in flight on another connection).
 * Not meaningful on the embedded PGlite server, whose connections share one
 * session: every replica there would "hold" the lock.
 */
export interface SessionLock {
  /** Whether this session held the lock when last checked. */
  readonly held: boolean;
  /**
   * Takes the lock if free (true when this session holds it). While held it
   * checks the connection instead, so a silently dead connection is noticed
   * here. Never throws: a connection problem answers false (and reports
   * through onLost when the lock was held).
   */
  tryAcquire(): Promise<boolean>;
  /** Called when a held lock is lost with its connection. */
  onLost(listener: (error: Error) => void): void;
  /** Releases the lock and closes the connection. Idempotent. */
  close(): Promise<void>;
}

export interface SessionLockOptions {
  /** Per-query bound, so a stalled server is noticed. Default 5 s. */
  queryTimeoutMs?: number;
  /** Shown in pg_stat_activity. */
  applicationName?: string;
}

export function openSessionLock(databaseUrl: string, key: bigint, options: SessionLockOptions = {}): SessionLock {
  const queryTimeoutMs = options.queryTimeoutMs ?? 5000;
  let client: pg.Client | undefined;
  let held = false;
  let closed = false;
  const listeners: Array<(error: Error) => void> = [];

  const drop = (c: pg.Client, error: Error) => {
    if (client !== c) return;
    client = undefined;
    c.end().catch(() => undefined);
    if (held) {
      held = false;
      for (const l of listeners) l(error);
    }
  };

  const connect = async (): Promise<pg.Client> => {
    const c = new pg.Client({
      connectionString: databaseUrl,
      application_name: options.applicationName ?? 'corral-lock',
      connectionTimeoutMillis: queryTimeoutMs,
      query_timeout: queryTimeoutMs,
      keepAlive: true,
    });
    c.on('error', (err) => drop(c, err));
    c.on('end', () => drop(c, new Error('lock connection ended')));
    client = c;
    try {
      await c.connect();
    } catch (err) {
      drop(c, err as Error);
      throw err;
    }
    return c;
  };

  return {
    get held() {
      return held;
    },
    async tryAcquire() {
      if (closed) return false;
      let c = client;
      try {
        c ??= await connect();
        if (held) {
          await c.query('SELECT 1');
          return held;
        }
        const res = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [key.toString()]);
        held = res.rows[0]?.ok === true && client === c;
        return held;
      } catch (err) {
        if (c) drop(c, err as Error);
        return false;
      }
    },
    onLost(listener) {
      listeners.push(listener);
    },
    async close() {
      if (closed) return;
      closed = true;
      const c = client;
      client = undefined;
      held = false;
      // Ending the session releases the lock; no unlock round trip needed.
      if (c) await c.end().catch(() => undefined);
    },
  };
}
