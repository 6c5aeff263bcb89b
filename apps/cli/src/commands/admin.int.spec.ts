import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { runCli } from '../run-cli';

class Capture {
  text = '';
  write(chunk: string | Uint8Array) {
    this.text += Buffer.from(chunk).toString('utf8');
    return true;
  }
}

describeWithDatabase('corral admin reissue-key (Postgres)', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db.drop());

  async function corral(args: string[], env: Record<string, string | undefined> = {}) {
    const stdout = new Capture();
    const stderr = new Capture();
    const code = await runCli(args, { stdout, stderr, env });
    return { code, stdout: stdout.text, stderr: stderr.text };
  }

  it('revokes the bootstrap admin key and prints a working new one, once', async () => {
    // Loaded the way the CLI loads it: lazily, so other commands never pull in Prisma.
    const { authenticateApiKey, ensureFirstAdminKey } = await import('@corral/auth');
    const first = await ensureFirstAdminKey(db.prisma);
    expect(first).toBeDefined();
    const res = await corral(['admin', 'reissue-key', '--database-url', db.url, '-o', 'json']);
    expect(res).toMatchObject({ code: 0, stderr: '' });
    const printed = JSON.parse(res.stdout);
    expect(printed).toMatchObject({ key: expect.stringMatching(/^crl_/), revoked: 1 });
    expect(await authenticateApiKey(db.prisma, printed.key)).toMatchObject({ admin: true });
    await expect(authenticateApiKey(db.prisma, first?.key ?? '')).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
  });

  it('reads DATABASE_URL when no flag is given, and prints a table by default', async () => {
    const res = await corral(['admin', 'reissue-key'], { DATABASE_URL: db.url });
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/Admin key:\s+crl_\w+/);
  });

  it('is a usage error without a database URL', async () => {
    expect(await corral(['admin', 'reissue-key'])).toMatchObject({ code: 2, stderr: 'error: no database: pass --database-url or set DATABASE_URL\n' });
    expect(await corral(['admin', 'reissue-key', '--database-url', 'mysql://x'])).toMatchObject({ code: 2 });
  });
});
