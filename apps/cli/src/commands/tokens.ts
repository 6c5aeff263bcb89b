import type { Command } from 'commander';
import { renderDetails } from '../output/printer';
import type { Session } from '../session';
import { positiveInteger } from './parsers';

export function registerTokens(program: Command, session: Session): void {
  const token = program.command('token').description('host registration tokens');
  token
    .command('create')
    .description('create a one-time token a node agent registers with (platform host with an admin key, team host with a team key)')
    .option('--ttl <seconds>', 'seconds until the token expires (default 3600)', positiveInteger)
    .option('--description <text>', 'what the token is for')
    .action(async (options: { ttl?: number; description?: string }, command: Command) => {
      const res = await session.client(command).createRegistrationToken({ ttlSeconds: options.ttl ?? 0, description: options.description ?? '' });
      const view = { id: res.id, token: res.token, expiresAt: res.expiresAt ? res.expiresAt.toISOString() : null };
      session.printer(command).result(view, (v) =>
        renderDetails([
          ['ID', v.id],
          ['Token', v.token],
          ['Expires', v.expiresAt],
        ]) + 'The token is shown only once.\n',
      );
    });
}
