import type { Command } from 'commander';
import { renderDetails } from '../output/printer';
import type { Session } from '../session';

export function registerWhoAmI(program: Command, session: Session): void {
  program
    .command('whoami')
    .description('show which API key you are using and what it may reach')
    .action(async (_options, command: Command) => {
      const me = await session.client(command).whoAmI({});
      const view = { keyId: me.keyId, admin: me.admin, teamId: me.teamId || null };
      session.printer(command).result(view, (v) =>
        renderDetails([
          ['Key ID', v.keyId],
          ['Admin', v.admin ? 'yes' : 'no'],
          ['Team', v.teamId ?? (v.admin ? '(all teams)' : null)],
        ]),
      );
    });
}
