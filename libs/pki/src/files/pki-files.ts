import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError } from '@corral/domain';
import { CertificateAuthority, createCertificateAuthority, type CaMaterial, type CertificateUsage } from '../authority/certificate-authority';
import { generateKeyPair } from '../keys/key-pair';
import { createCertificateRequest } from '../requests/certificate-request';
import { identityUri } from '../identity/workload-identity';

// The on-disk layout `corral tls` and the launcher share, like `nomad tls`:
// <dir>/ca.pem + ca-key.pem for the authority, <dir>/<service>.pem +
// <service>-key.pem for a control-plane certificate. Keys are written 0600
// and never printed.

export const CA_CERT_FILE = 'ca.pem';
export const CA_KEY_FILE = 'ca-key.pem';

export interface CaFiles {
  certificateFile: string;
  privateKeyFile: string;
}

export interface CertificateFiles {
  caCertificateFile: string;
  certificateFile: string;
  privateKeyFile: string;
  notAfter: Date;
}

/** Written to a temporary name, then renamed: a file is either absent or whole. */
function writeWhole(path: string, content: string, mode: number): void {
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, content, { mode });
  renameSync(temp, path);
}

export function caFilesIn(dir: string): CaFiles {
  return { certificateFile: join(dir, CA_CERT_FILE), privateKeyFile: join(dir, CA_KEY_FILE) };
}

/**
 * Creates a CA in `dir`. An existing one is never replaced (every certificate
 * it issued would stop being trusted): FailedPrecondition, unless
 * `reuseExisting`, which returns it.
 */
export async function createCaFiles(dir: string, options: { validForDays?: number; commonName?: string; reuseExisting?: boolean } = {}): Promise<CaFiles & { created: boolean }> {
  const files = caFilesIn(dir);
  if (existsSync(files.certificateFile) || existsSync(files.privateKeyFile)) {
    if (options.reuseExisting && existsSync(files.certificateFile) && existsSync(files.privateKeyFile)) return { ...files, created: false };
    throw new FailedPreconditionError(`a CA already exists in ${dir} (${CA_CERT_FILE} / ${CA_KEY_FILE}); replacing it would untrust every certificate it issued`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = await createCertificateAuthority({ validForDays: options.validForDays, commonName: options.commonName });
  writeWhole(files.privateKeyFile, ca.privateKeyPem, 0o600);
  writeWhole(files.certificateFile, ca.certificatePem, 0o644);
  return { ...files, created: true };
}

export function readCaFiles(dir: string): CaMaterial {
  const files = caFilesIn(dir);
  const read = (path: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new FailedPreconditionError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'} (create a CA with \`corral tls ca create --dir ${dir}\`)`);
    }
  };
  return { certificatePem: read(files.certificateFile), privateKeyPem: read(files.privateKeyFile) };
}

/**
 * Issues a control-plane certificate (identity control-plane/<service>)
 * from the CA in `caDir` into `outDir`; an existing one is replaced (that is
 * how it is renewed). A client certificate unless `usages` says otherwise;
 * `names` (DNS names or IP addresses) are for a server one.
 */
export async function issueControlPlaneCertificateFiles(options: {
  caDir: string;
  outDir: string;
  service: string;
  validForDays?: number;
  now?: Date;
  usages?: CertificateUsage[];
  names?: string[];
}): Promise<CertificateFiles> {
  try {
    identityUri({ kind: 'control-plane', service: options.service });
  } catch {
    throw new InvalidArgumentError('must be letters, digits, ".", "_" or "-" (at most 128), starting with a letter or digit', { field: 'service' });
  }
  const days = options.validForDays ?? 365;
  if (!(Number.isInteger(days) && days >= 1 && days <= 397)) throw new InvalidArgumentError('must be a whole number of days from 1 to 397', { field: 'days' });
  const authority = await CertificateAuthority.load(readCaFiles(options.caDir));
  const keys = generateKeyPair();
  const issued = await authority.issue({
    csrPem: await createCertificateRequest(keys.privateKeyPem, options.service),
    identity: { kind: 'control-plane', service: options.service },
    usages: options.usages ?? ['client'],
    dnsNames: (options.names ?? []).filter((name) => isIP(name) === 0),
    ipAddresses: (options.names ?? []).filter((name) => isIP(name) !== 0),
    validForSeconds: days * 86_400,
    now: options.now ?? new Date(),
  });
  mkdirSync(options.outDir, { recursive: true, mode: 0o700 });
  const files = {
    caCertificateFile: join(options.outDir, options.outDir === options.caDir ? CA_CERT_FILE : `${options.service}-ca.pem`),
    certificateFile: join(options.outDir, `${options.service}.pem`),
    privateKeyFile: join(options.outDir, `${options.service}-key.pem`),
  };
  writeWhole(files.privateKeyFile, keys.privateKeyPem, 0o600);
  writeWhole(files.certificateFile, issued.certificatePem, 0o644);
  if (files.caCertificateFile !== caFilesIn(options.caDir).certificateFile) writeWhole(files.caCertificateFile, authority.certificatePem, 0o644);
  return { ...files, notAfter: issued.notAfter };
}
