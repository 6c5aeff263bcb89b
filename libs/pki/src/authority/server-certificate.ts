import { isIP } from 'node:net';
import { generateKeyPair } from '../keys/key-pair';
import { createCertificateRequest } from '../requests/certificate-request';
import type { CertificateAuthority } from './certificate-authority';

// A control-plane service's own TLS server certificate, issued in memory by
// a service that holds the CA (host-registry): the identity
// control-plane/<service> for Corral's clients, plus the names it is
// reached by for ordinary TLS clients (grpcurl --cacert). The chain carries
// the CA certificate after the leaf, so a new host holding only the CA's pin
// can take the CA from the handshake.

export interface ServerCertificate {
  caCertificatePem: string;
  /** Leaf, then the CA. */
  certificatePem: string;
  /** A secret: kept in memory, never logged. */
  privateKeyPem: string;
  notAfter: Date;
}

export async function issueControlPlaneServerCertificate(
  authority: CertificateAuthority,
  options: { service: string; names: string[]; validForSeconds: number; now?: Date },
): Promise<ServerCertificate> {
  const keys = generateKeyPair();
  const names = [...new Set(options.names.filter((name) => name !== '' && name !== '0.0.0.0' && name !== '::'))];
  const issued = await authority.issue({
    csrPem: await createCertificateRequest(keys.privateKeyPem, options.service),
    identity: { kind: 'control-plane', service: options.service },
    dnsNames: names.filter((name) => isIP(name) === 0),
    ipAddresses: names.filter((name) => isIP(name) !== 0),
    usages: ['server'],
    validForSeconds: options.validForSeconds,
    now: options.now ?? new Date(),
  });
  return {
    caCertificatePem: authority.certificatePem,
    certificatePem: `${issued.certificatePem.trimEnd()}\n${authority.certificatePem.trimEnd()}\n`,
    privateKeyPem: keys.privateKeyPem,
    notAfter: issued.notAfter,
  };
}
