import { describeWithPostgres, queryRows } from '../test-support/postgres';
import { createThrowawayDatabase, type ThrowawayDatabase } from '../throwaway/throwaway-database';
import { openSessionLock, type SessionLock } from './session-lock';

describeWithPostgres('session advisory lock (Postgres)', () => {
  let database: ThrowawayDatabase;
  const locks: SessionLock[] = [];
  const open = (appName = 'corral-lock-test') => {
    const l = openSessionLock(database.url, 42n, { applicationName: appName, queryTimeoutMs: 5000 });
    locks.push(l);
    return l;
  };

  beforeAll(async () => {
    database = await createThrowawayDatabase({ migrations: false });
  });
  afterAll(async () => {
    await Promise.all(locks.map((l) => l.close()));
    await database.drop();
  });

  it('is held by one session at a time and passes on when the holder closes', async () => {
    const a = open();
    const b = open();
    expect(await a.tryAcquire()).toBe(true);
    expect(await b.tryAcquire()).toBe(false);
    // Re-checking while held answers true without stacking the lock.
    expect(await a.tryAcquire()).toBe(true);
    await a.close();
    expect(await b.tryAcquire()).toBe(true);
    expect(await a.tryAcquire()).toBe(false);
    await b.close();
  });

  it('reports the loss when its connection is killed, and the server frees the lock for another session', async () => {
    const a = open('corral-lock-victim');
    const b = open();
    const lost: Error[] = [];
    a.onLost((e) => lost.push(e));
    expect(await a.tryAcquire()).toBe(true);
    await queryRows(database.url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'corral-lock-victim'");
    // The server freed the lock with the session: another one takes it.
    const deadline = Date.now() + 20_000;
    while (!(await b.tryAcquire()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(b.held).toBe(true);
    // The old holder's next check notices (if the error event did not already) and cannot retake it.
    expect(await a.tryAcquire()).toBe(false);
    expect(lost.length).toBe(1);
    expect(a.held).toBe(false);
  });
});
