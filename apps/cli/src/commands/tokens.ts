import type { Command } from 'commander';
import type { hostRegistryV1 } from '@corral/proto';
import { renderDetails, renderTable } from '../output/printer';
import type { Session } from '../session';
import { envEntry, positiveInteger } from './parsers';

const isoOrNull = (value: Date | undefined) => (value ? value.toISOString() : null);

/** A registration token as `--output json` prints it: the REST shape (never its secret, which is shown only at create). */
export function registrationTokenView(t: hostRegistryV1.RegistrationToken, now = new Date()) {
  const state = t.revokedAt ? 'revoked' : t.usedAt ? 'used' : t.expiresAt && t.expiresAt.getTime() <= now.getTime() ? 'expired' : 'active';
  return {
    id: t.id,
    description: t.description,
    teamId: t.teamId || null,
    state,
    createdAt: isoOrNull(t.createdAt),
    expiresAt: isoOrNull(t.expiresAt),
    usedAt: isoOrNull(t.usedAt),
    usedByHostId: t.usedByHostId || null,
    revokedAt: isoOrNull(t.revokedAt),
    scope: { namePattern: t.scope?.namePattern || null, labels: { ...(t.scope?.labels ?? {}) } },
  };
}

export function registerTokens(program: Command, session: Session): void {
  const token = program.command('token').description('host registration tokens');
  token
    .command('create')
    .description('create a one-time token a node agent registers with (platform host with an admin key, team host with a team key)')
    .option('--ttl <seconds>', 'seconds until the token expires (default 3600)', positiveInteger)
    .option('--description <text>', 'what the token is for')
    .option('--name-pattern <glob>', 'only a host whose name matches may register (`*` any run, `?` one character)')
    // Same KEY=VALUE shape (and "given twice" check) as -e for workloads.
    .option('--label <key=value>', 'only a host registering with this label may register (repeatable)', envEntry)
    .action(async (options: { ttl?: number; description?: string; namePattern?: string; label?: Record<string, string> }, command: Command) => {
      const scoped = options.namePattern !== undefined || options.label !== undefined;
      const res = await session.client(command).createRegistrationToken({
        ttlSeconds: options.ttl ?? 0,
        description: options.description ?? '',
        scope: scoped ? { namePattern: options.namePattern ?? '', labels: options.label ?? {} } : undefined,
      });
      const view = { id: res.id, token: res.token, expiresAt: res.expiresAt ? res.expiresAt.toISOString() : null };
      session.printer(command).result(view, (v) =>
        renderDetails([
          ['ID', v.id],
          ['Token', v.token],
          ['Expires', v.expiresAt],
        ]) + 'The token is shown only once.\n',
      );
    });

  token
    .command('list')
    .alias('ls')
    .description("list registration tokens (your team's; every token with an admin key), newest first")
    .action(async (_options, command: Command) => {
      const res = await session.client(command).listRegistrationTokens({});
      const now = new Date();
      const views = res.tokens.map((t) => registrationTokenView(t, now));
      session.printer(command).result({ tokens: views }, ({ tokens }) =>
        renderTable(tokens, [
          { header: 'ID', value: (t) => t.id },
          { header: 'STATE', value: (t) => t.state },
          { header: 'TEAM', value: (t) => t.teamId ?? '' },
          { header: 'DESCRIPTION', value: (t) => t.description },
          { header: 'EXPIRES', value: (t) => t.expiresAt ?? '' },
          { header: 'USED BY', value: (t) => t.usedByHostId ?? '' },
        ]),
      );
    });

  token
    .command('revoke')
    .argument('<id>', 'token id')
    .description('revoke a registration token so no host can register with it (idempotent)')
    .action(async (id: string, _options, command: Command) => {
      const res = await session.client(command).revokeRegistrationToken({ id });
      if (!res.token) throw new Error('the gateway answered without a token');
      session.printer(command).result(registrationTokenView(res.token), (t) => `token ${t.id} revoked at ${t.revokedAt}\n`);
    });
}
