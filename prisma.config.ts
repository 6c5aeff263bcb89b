// Prisma 7 CLI configuration. Services never read this: they get their
// connection URL from their own config and apply prisma/migrations through
// @corral/db. It matters for `prisma generate` (tools/generate/prisma.sh) and,
// where the native schema engine exists, for `prisma migrate deploy|status`.
import { defineConfig } from 'prisma/config';

const databaseUrl = process.env['DATABASE_URL'];

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  // Optional so that `prisma generate`, which needs no database, works where
  // DATABASE_URL is unset (CI's codegen check).
  ...(databaseUrl ? { datasource: { url: databaseUrl } } : {}),
});
