import { createDatabase, databaseUrlFor, dropDatabase } from './admin';

describe('databaseUrlFor', () => {
  it('swaps only the database, keeping credentials, host and parameters', () => {
    expect(databaseUrlFor('postgres://user:p%40ss@db.internal:6543/postgres?sslmode=require', 'corral_t_1')).toBe(
      'postgres://user:p%40ss@db.internal:6543/corral_t_1?sslmode=require',
    );
  });

  it('works from a server URL without a database', () => {
    expect(databaseUrlFor('postgres://postgres@127.0.0.1:5432', 'corral')).toBe('postgres://postgres@127.0.0.1:5432/corral');
  });
});

describe('database name checks', () => {
  // The name is interpolated into CREATE/DROP DATABASE, so anything that
  // would need quoting is refused before a connection is even attempted.
  it.each(['Corral', 'corral-t', 'x"; DROP DATABASE postgres; --', '', '1corral', 'a'.repeat(64)])(
    'refuses %j',
    async (name) => {
      expect(() => databaseUrlFor('postgres://127.0.0.1/postgres', name)).toThrow(/invalid database name/);
      await expect(createDatabase('postgres://127.0.0.1:1/postgres', name)).rejects.toThrow(/invalid database name/);
      await expect(dropDatabase('postgres://127.0.0.1:1/postgres', name)).rejects.toThrow(/invalid database name/);
    },
  );
});
