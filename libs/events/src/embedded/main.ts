// Runs the embedded broker as its own process:
//   npx tsx libs/events/src/embedded/main.ts [--host 127.0.0.1] [--port 4222]
// Prints the URL on stdout once listening; stops on SIGINT/SIGTERM.

import { startEmbeddedBroker } from './broker';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const portArg = arg('port') ?? '4222';
  const port = Number(portArg);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid --port ${portArg}`);
  const broker = await startEmbeddedBroker({ host: arg('host') ?? '127.0.0.1', port });
  process.stdout.write(`${broker.url}\n`);
  const stop = (): void => {
    void broker.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`embedded NATS broker failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
