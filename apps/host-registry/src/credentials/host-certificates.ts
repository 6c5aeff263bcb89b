import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { FailedPreconditionError } from '@corral/domain';
import { CertificateAuthority, verifyCertificateRequest } from '@corral/pki';
import type { hostRegistryV1 } from '@corral/proto';

// Hosts' mutual-TLS certificates, issued by the internal CA this registry
// holds (CORRAL_CA_CERT_FILE + CORRAL_CA_KEY_FILE) at registration and at
// every credential refresh. The agent sends only a CSR; the identity
// (host/<hostId>) and the names (its registered address) are ours to write.

export interface HostCertificateIssuerOptions {
  /** Lifetime of each certificate; agents renew far more often (with their JWT). */
  validForSeconds: number;
}

export class HostCertificateIssuer {
  private constructor(
    private readonly authority: CertificateAuthority,
    private readonly options: HostCertificateIssuerOptions,
  ) {}

  /** The CA itself, for the registry's own server certificate. */
  get certificateAuthority(): CertificateAuthority {
    return this.authority;
  }

  static fromAuthority(authority: CertificateAuthority, options: HostCertificateIssuerOptions): HostCertificateIssuer {
    return new HostCertificateIssuer(authority, options);
  }

  /** Loads the CA once at start; a missing or mismatched file fails naming its variable. */
  static async load(files: { certificateFile: string; privateKeyFile: string }, options: HostCertificateIssuerOptions): Promise<HostCertificateIssuer> {
    const read = async (path: string, variable: string) => {
      try {
        return await readFile(path, 'utf8');
      } catch (err) {
        throw new FailedPreconditionError(`${variable}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      }
    };
    const certificatePem = await read(files.certificateFile, 'CORRAL_CA_CERT_FILE');
    const privateKeyPem = await read(files.privateKeyFile, 'CORRAL_CA_KEY_FILE');
    let authority: CertificateAuthority;
    try {
      authority = await CertificateAuthority.load({ certificatePem, privateKeyPem });
    } catch (err) {
      // The reason names neither file's content: the key is a secret.
      throw new FailedPreconditionError(`CORRAL_CA_CERT_FILE / CORRAL_CA_KEY_FILE are not a usable CA: ${(err as Error).message}`);
    }
    return new HostCertificateIssuer(authority, options);
  }

  /** InvalidArgument naming `csr` for a bad request; called before anything is spent. */
  async check(csrPem: string): Promise<void> {
    await verifyCertificateRequest(csrPem);
  }

  async issue(hostId: string, agentAddress: string, csrPem: string, now: Date): Promise<hostRegistryV1.HostCertificate> {
    const host = hostOfAddress(agentAddress);
    const named = host === undefined ? {} : isIP(host) ? { ipAddresses: [host] } : { dnsNames: [host] };
    const issued = await this.authority.issue({
      csrPem,
      identity: { kind: 'host', hostId },
      ...named,
      usages: ['server', 'client'],
      validForSeconds: this.options.validForSeconds,
      now,
    });
    // What the certificate itself says: X.509 times have whole seconds.
    const expiresAt = new Date(Math.floor(issued.notAfter.getTime() / 1000) * 1000);
    return { certificate: issued.certificatePem, caCertificate: this.authority.certificatePem, expiresAt };
  }
}

/** `10.0.0.5:50060` → `10.0.0.5`, `[::1]:50060` → `::1`, `node-7.internal:50060` → `node-7.internal`. */
export function hostOfAddress(agentAddress: string): string | undefined {
  const colon = agentAddress.lastIndexOf(':');
  if (colon <= 0) return undefined;
  const host = agentAddress.slice(0, colon);
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return bare === '' ? undefined : bare;
}
