import { renameSync, writeFileSync } from 'node:fs';

// A nats-server configuration file, for a server Corral starts itself (the
// launcher, the TLS tests): TLS cannot be given on nats-server's command
// line without exposing paths to quoting rules, so everything goes into a
// file written 0600 and the server gets only `-c <file>`.

export interface NatsServerConfig {
  host: string;
  port: number;
  /** JetStream on, storing here. */
  jetStreamDir?: string;
  tls?: {
    certFile: string;
    keyFile: string;
    /** CA for client certificates; with `verifyClients` a client without one is refused. */
    caFile?: string;
    verifyClients?: boolean;
  };
}

/** A quoted string for the NATS config format; refuses what it cannot quote safely. */
function quoted(value: string, what: string): string {
  if (/["\\\n\r]/.test(value) || value.includes('$')) throw new Error(`${what} cannot be written to a nats-server config: ${JSON.stringify(value)}`);
  return `"${value}"`;
}

export function natsServerConfigText(config: NatsServerConfig): string {
  const lines = [`listen: ${quoted(`${config.host}:${config.port}`, 'listen address')}`];
  if (config.jetStreamDir) lines.push(`jetstream {`, `  store_dir: ${quoted(config.jetStreamDir, 'JetStream dir')}`, `}`);
  if (config.tls) {
    lines.push('tls {', `  cert_file: ${quoted(config.tls.certFile, 'certificate file')}`, `  key_file: ${quoted(config.tls.keyFile, 'key file')}`);
    if (config.tls.caFile) lines.push(`  ca_file: ${quoted(config.tls.caFile, 'CA file')}`);
    if (config.tls.verifyClients) lines.push('  verify: true');
    lines.push('  timeout: 2', '}');
  }
  return lines.join('\n') + '\n';
}

/** Writes the file (0600: it names key files) whole: to a temporary name, then renamed. */
export function writeNatsServerConfig(path: string, config: NatsServerConfig): void {
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, natsServerConfigText(config), { mode: 0o600 });
  renameSync(temp, path);
}
