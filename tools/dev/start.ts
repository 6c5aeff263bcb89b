// `npm start`: all of Corral on this machine, on embedded defaults unless
// DATABASE_URL / NATS_URL point elsewhere. Ctrl-C stops every service.
// Workloads are not children of the agent (an agent restart must not kill
// them), so they outlive it; stop them through the API first if you want
// nothing left running.
import { resolve } from 'node:path';
import { startSystem } from '@corral/launcher';

const repoRoot = resolve(__dirname, '..', '..');
const dataDir = resolve(process.env.CORRAL_DATA_DIR ?? resolve(repoRoot, '.data'));
const logLevel = (process.env.LOG_LEVEL as 'info' | undefined) ?? 'info';

async function main() {
  const started = Date.now();
  const system = await startSystem({
    repoRoot,
    dataDir,
    databaseUrl: process.env.DATABASE_URL || undefined,
    natsUrl: process.env.NATS_URL || undefined,
    logLevel,
    bus: /^(1|true|yes)$/i.test(process.env.CORRAL_EMBEDDED_BUS ?? '') ? 'embedded' : 'auto',
    // Unset: the one kept in the data dir (made on the first start).
    natsSubjectNamespace: process.env.NATS_SUBJECT_NAMESPACE,
    progress: (line) => console.log(`corral: ${line}`),
  });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const lines = [
    '',
    `Corral is up (${seconds}s).`,
    `  REST + OpenAPI:   ${system.gatewayUrl}   (docs: ${system.gatewayUrl}/docs)`,
    `  gRPC (CLI):       ${system.gatewayGrpcAddress}`,
    `  database:         ${system.databaseKind === 'embedded-pglite' ? `embedded PGlite in ${dataDir}/pglite` : 'DATABASE_URL'}`,
    `  event bus:        ${{ external: 'NATS_URL', 'nats-server': 'nats-server from PATH', 'embedded-broker': 'embedded NATS-protocol broker' }[system.busKind]} (${system.natsUrl}${system.natsSubjectNamespace ? `, subjects under ${system.natsSubjectNamespace}.` : ''})`,
    `  local host:       ${system.localHostId ?? '(none)'}`,
    `  service logs:     ${dataDir}/logs/`,
    '',
  ];
  if (system.adminKey) {
    lines.push(
      '==================== ADMIN API KEY (shown once) ====================',
      `  ${system.adminKey}`,
      '  export CORRAL_API_KEY=<the key above>',
      '  Lost it? corral admin reissue-key --database-url <url>',
      '====================================================================',
    );
  } else {
    lines.push('The admin key was shown when this data directory was first used; re-issue it with `corral admin reissue-key`.');
  }
  lines.push('', 'Press Ctrl-C to stop.');
  console.log(lines.join('\n'));

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) process.exit(130);
    stopping = true;
    console.log(`\ncorral: ${signal}: stopping services...`);
    await system.stop();
    console.log('corral: stopped.');
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

main().catch((err) => {
  console.error(`corral: failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
