import type { Command } from 'commander';
import { renderDetails } from '../output/printer';
import type { Session } from '../session';
import { UsageError } from '../usage-error';

export function registerAdmin(program: Command, session: Session): void {
  const admin = program.command('admin').description('operator commands that work on the database directly');
  admin
    .command('reissue-key')
    .description('revoke the bootstrap admin key(s) and print a new admin key, once')
    .option('--database-url <url>', 'Postgres URL (default: $DATABASE_URL)')
    .action(async (options: { databaseUrl?: string }, command: Command) => {
      const databaseUrl = options.databaseUrl || session.io.env['DATABASE_URL'];
      if (!databaseUrl) throw new UsageError('no database: pass --database-url or set DATABASE_URL');
      if (!/^postgres(ql)?:\/\//.test(databaseUrl)) throw new UsageError('--database-url must be a postgres:// URL');
      // Loaded only here: every other command talks to the gateway and should
      // not pay for loading the database client.
      const { createPrismaClient } = await import('@corral/db');
      const { reissueAdminKey } = await import('@corral/auth');
      const prisma = createPrismaClient(databaseUrl, { maxConnections: 1 });
      try {
        const issued = await reissueAdminKey(prisma);
        const view = { id: issued.id, key: issued.key, prefix: issued.prefix, revoked: issued.revoked };
        session.printer(command).result(view, (v) =>
          renderDetails([
            ['Key ID', v.id],
            ['Admin key', v.key],
            ['Revoked', `${v.revoked} earlier bootstrap key(s)`],
          ]) + 'The key is shown only once; only its hash is stored.\n',
        );
      } finally {
        await prisma.$disconnect();
      }
    });
}
