import { Command, CommanderError, Option } from 'commander';
import { isCorralError } from '@corral/domain';
import { ERROR_NAME_KEY, isServiceError } from '@corral/grpc';
import { registerAdmin } from './commands/admin';
import { registerEvents } from './commands/events';
import { registerHosts } from './commands/hosts';
import { registerImages } from './commands/images';
import { registerServices } from './commands/services';
import { registerTls } from './commands/tls';
import { registerTokens } from './commands/tokens';
import { registerWhoAmI } from './commands/whoami';
import { registerWorkloads } from './commands/workloads';
import { registerCopy, registerExec } from './commands/exec-files';
import { DEFAULT_ADDR } from './connection/connection';
import { Session, type CliIo } from './session';
import { UsageError } from './usage-error';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export type { CliInput, CliIo } from './session';

function buildProgram(session: Session): Command {
  const program = new Command('corral')
    .description('Drive Corral from the command line, through the gateway\'s gRPC API.')
    .option('--addr <host:port>', `gateway gRPC address (default: $CORRAL_ADDR or ${DEFAULT_ADDR})`)
    .option('--api-key <key>', 'API key (default: $CORRAL_API_KEY)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    // Settings below are inherited by every subcommand created afterwards.
    .exitOverride()
    .configureOutput({
      writeOut: (text) => session.io.stdout.write(text),
      writeErr: (text) => session.io.stderr.write(text),
    })
    .showHelpAfterError('(add --help for usage)');

  registerWhoAmI(program, session);
  registerTokens(program, session);
  registerHosts(program, session);
  registerWorkloads(program, session);
  registerImages(program, session);
  registerServices(program, session);
  registerEvents(program, session);
  registerExec(program, session);
  registerCopy(program, session);
  registerAdmin(program, session);
  registerTls(program, session);
  return program;
}

/** Whether the gateway itself answered with this error, rather than the call never reaching it. */
function answeredByServer(err: { cause?: unknown }): boolean {
  return isServiceError(err.cause) && err.cause.metadata.get(ERROR_NAME_KEY).length > 0;
}

function describeFailure(err: unknown, session: Session): string {
  if (isCorralError(err)) {
    if (err.code === 'UNAVAILABLE' && !answeredByServer(err)) {
      // Local detail from grpc-js (refused, DNS, TLS) is what helps here; the
      // typed error carries a fixed text and keeps grpc-js's in its cause.
      const transport = isServiceError(err.cause) ? err.cause.details : err.message;
      const detail = transport.replace(/\s*Resolution note:\s*$/, '');
      return `cannot reach the Corral gateway at ${session.connectedTo ?? 'its address'}: ${detail}`;
    }
    if (err.code === 'DEADLINE_EXCEEDED') return 'the gateway did not answer in time';
    return err.field ? `${err.message} (field: ${err.field})` : err.message;
  }
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs one `corral` command line (without the program name) and returns its
 * exit code: 0 success, 1 the operation failed, 2 the command line is wrong.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const session = new Session(io);
  const program = buildProgram(session);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return session.exitCode ?? EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed what was wrong (or the help asked for).
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT_OK;
      return EXIT_USAGE;
    }
    if (err instanceof UsageError) {
      io.stderr.write(`error: ${err.message}\n`);
      return EXIT_USAGE;
    }
    io.stderr.write(`error: ${describeFailure(err, session)}\n`);
    return EXIT_FAILED;
  } finally {
    session.close();
  }
}
