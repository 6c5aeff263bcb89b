import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { FailedPreconditionError, InvalidArgumentError } from '@corral/domain';
import { caCertificatePin, caFilesIn, createCaFiles, issueControlPlaneCertificateFiles } from '@corral/pki';
import { renderDetails } from '../output/printer';
import type { Session } from '../session';
import { positiveInteger } from './parsers';

// Offline, like `nomad tls ca create` / `nomad tls cert create`: the internal
// CA for mutual TLS between the control plane and agents, and control-plane
// client certificates from it. No server is contacted; keys are written 0600
// and never printed.

function readCaCertificate(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new FailedPreconditionError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (!pem.includes('BEGIN CERTIFICATE')) throw new FailedPreconditionError(`${file} is not a PEM certificate`);
  return pem;
}

export function registerTls(program: Command, session: Session): void {
  const tls = program.command('tls').description('internal CA and certificates for mutual TLS between the control plane and agents (offline)');

  const ca = tls.command('ca').description('the internal certificate authority');

  ca.command('create')
    .description('create a CA: <dir>/ca.pem (give it to host-registry as CORRAL_CA_CERT_FILE) and <dir>/ca-key.pem (CORRAL_CA_KEY_FILE, 0600); refuses to replace one')
    .requiredOption('--dir <dir>', 'directory to write the CA into')
    .option('--days <days>', 'lifetime of the CA certificate (default 3650)', positiveInteger)
    .action(async (options: { dir: string; days?: number }, command: Command) => {
      const files = await createCaFiles(resolve(options.dir), { validForDays: options.days });
      const view = { certificateFile: files.certificateFile, privateKeyFile: files.privateKeyFile, sha256: caCertificatePin(readCaCertificate(files.certificateFile)) };
      session.printer(command).result(view, (v) =>
        renderDetails([
          ['CA certificate', v.certificateFile],
          ['CA private key', v.privateKeyFile],
          ['CA pin (sha256)', v.sha256],
        ]) +
          'Keep the private key secret: whoever holds it can impersonate any host or service.\n' +
          'Agents verify host-registry with the certificate (AGENT_CONTROL_PLANE_CA_FILE) or, given only the pin, AGENT_CONTROL_PLANE_CA_SHA256.\n',
      );
    });

  ca.command('pin')
    .description("print the CA pin: the SHA-256 of the CA certificate, for agents' AGENT_CONTROL_PLANE_CA_SHA256 (they then take the CA from host-registry's TLS handshake and check it)")
    .option('--dir <dir>', 'directory holding ca.pem')
    .option('--cert <file>', 'the CA certificate file itself (instead of --dir)')
    .action((options: { dir?: string; cert?: string }, command: Command) => {
      if (!options.dir === !options.cert) throw new InvalidArgumentError('give exactly one of --dir or --cert', { field: options.cert ? 'cert' : 'dir' });
      const file = options.cert ? resolve(options.cert) : caFilesIn(resolve(options.dir as string)).certificateFile;
      const view = { certificateFile: file, sha256: caCertificatePin(readCaCertificate(file)) };
      session.printer(command).result(view, (v) => `${v.sha256}\n`);
    });

  tls
    .command('cert')
    .description('certificates from the internal CA')
    .command('create')
    .description('issue a control-plane client certificate, e.g. for the scheduler (AGENT_TLS_CA_FILE, AGENT_TLS_CERT_FILE, AGENT_TLS_KEY_FILE); replaces an existing one')
    .requiredOption('--service <name>', 'control-plane service the certificate speaks for, e.g. scheduler')
    .requiredOption('--ca-dir <dir>', 'directory holding ca.pem and ca-key.pem')
    .requiredOption('--out <dir>', 'directory to write <service>.pem and <service>-key.pem into')
    .option('--days <days>', 'lifetime of the certificate, at most 397 (default 365)', positiveInteger)
    .action(async (options: { service: string; caDir: string; out: string; days?: number }, command: Command) => {
      const files = await issueControlPlaneCertificateFiles({ caDir: resolve(options.caDir), outDir: resolve(options.out), service: options.service, validForDays: options.days });
      const view = { service: options.service, caCertificateFile: files.caCertificateFile, certificateFile: files.certificateFile, privateKeyFile: files.privateKeyFile, expiresAt: files.notAfter.toISOString() };
      session.printer(command).result(view, (v) =>
        renderDetails([
          ['Identity', `spiffe://corral.internal/control-plane/${v.service}`],
          ['CA certificate', v.caCertificateFile],
          ['Certificate', v.certificateFile],
          ['Private key', v.privateKeyFile],
          ['Expires', v.expiresAt],
        ]),
      );
    });
}
