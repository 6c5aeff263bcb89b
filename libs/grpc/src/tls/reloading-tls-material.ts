import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { FailedPreconditionError } from '@corral/domain';
import type { TlsMaterial } from './mutual-tls';

// A control-plane service's certificate from files (AGENT_TLS_* and the
// like) that is picked up again when the files are replaced while the
// service runs, so re-issuing them (`corral tls cert create`, the launcher's
// renewal) needs no restart. Checked lazily, at most every `recheckMs`, by
// the files' stat (no watcher, no timer). The three files are written one
// after the other, so a reader can see a new key beside the old certificate:
// material that does not hang together (key not the certificate's, the
// certificate not signed by the CA) is not taken; the previous one stays in
// use until the files agree again.

/** Material that may change over time; `current()` is the one to use now (the same object until it changes). */
export interface TlsMaterialSource {
  current(): TlsMaterial;
}

export function isTlsMaterialSource(value: TlsMaterial | TlsMaterialSource): value is TlsMaterialSource {
  return typeof (value as TlsMaterialSource).current === 'function';
}

export interface TlsMaterialFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface ReloadingTlsMaterialOptions {
  /** Environment variable names used in errors (never the content: the key is a secret). */
  variables: { ca: string; cert: string; key: string };
  /** Stat the files at most this often. Default 30 s. */
  recheckMs?: number;
  now?: () => number;
  /** Called after new material was taken. */
  onReload?: (material: TlsMaterial) => void;
  /** Called when changed files were not taken (why, without content). */
  onRejected?: (reason: string) => void;
}

export class ReloadingTlsMaterial implements TlsMaterialSource {
  private material: TlsMaterial;
  private stamp: string;
  private checkedAt: number;
  private readonly now: () => number;

  private constructor(
    private readonly files: TlsMaterialFiles,
    private readonly options: ReloadingTlsMaterialOptions,
  ) {
    this.now = options.now ?? Date.now;
    // At start a bad file stops the service, naming its variable.
    this.stamp = this.stampOfFiles();
    const read = readMaterial(files, options.variables);
    const problem = inconsistency(read, options.variables);
    if (problem) throw new FailedPreconditionError(problem);
    this.material = read;
    this.checkedAt = this.now();
  }

  static load(files: TlsMaterialFiles, options: ReloadingTlsMaterialOptions): ReloadingTlsMaterial {
    return new ReloadingTlsMaterial(files, options);
  }

  current(): TlsMaterial {
    const now = this.now();
    if (now - this.checkedAt < (this.options.recheckMs ?? 30_000)) return this.material;
    this.checkedAt = now;
    let stamp: string;
    try {
      stamp = this.stampOfFiles();
    } catch (err) {
      // A file gone for a moment (replaced by rename) or unreadable: keep what works.
      this.options.onRejected?.((err as Error).message);
      return this.material;
    }
    if (stamp === this.stamp) return this.material;
    this.stamp = stamp;
    try {
      const read = readMaterial(this.files, this.options.variables);
      const problem = inconsistency(read, this.options.variables);
      if (problem) {
        this.options.onRejected?.(problem);
        return this.material;
      }
      this.material = read;
      this.options.onReload?.(read);
    } catch (err) {
      this.options.onRejected?.((err as Error).message);
    }
    return this.material;
  }

  private stampOfFiles(): string {
    const { variables } = this.options;
    return [
      [this.files.caFile, variables.ca],
      [this.files.certFile, variables.cert],
      [this.files.keyFile, variables.key],
    ]
      .map(([path, variable]) => {
        try {
          const s = statSync(path);
          return `${s.ino}:${s.size}:${s.mtimeMs}`;
        } catch (err) {
          throw new FailedPreconditionError(`${variable}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
        }
      })
      .join('|');
  }
}

function readMaterial(files: TlsMaterialFiles, variables: ReloadingTlsMaterialOptions['variables']): TlsMaterial {
  const read = (path: string, variable: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new FailedPreconditionError(`${variable}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
  return { caCertificatePem: read(files.caFile, variables.ca), certificatePem: read(files.certFile, variables.cert), privateKeyPem: read(files.keyFile, variables.key) };
}

/** Why the material does not hang together, or undefined. */
function inconsistency(material: TlsMaterial, variables: ReloadingTlsMaterialOptions['variables']): string | undefined {
  if (!material.caCertificatePem.includes('BEGIN CERTIFICATE')) return `${variables.ca} is not a PEM certificate`;
  if (!material.certificatePem.includes('BEGIN CERTIFICATE')) return `${variables.cert} is not a PEM certificate`;
  if (!material.privateKeyPem.includes('PRIVATE KEY')) return `${variables.key} is not a PEM private key`;
  let ca: X509Certificate;
  let certificate: X509Certificate;
  try {
    ca = new X509Certificate(material.caCertificatePem);
  } catch {
    return `${variables.ca} is not a readable certificate`;
  }
  try {
    certificate = new X509Certificate(material.certificatePem);
  } catch {
    return `${variables.cert} is not a readable certificate`;
  }
  try {
    if (!certificate.checkPrivateKey(createPrivateKey(material.privateKeyPem))) return `${variables.key} is not the key of ${variables.cert}`;
  } catch {
    return `${variables.key} is not a readable private key`;
  }
  if (!certificate.verify(ca.publicKey)) return `${variables.cert} is not signed by ${variables.ca}`;
  return undefined;
}
