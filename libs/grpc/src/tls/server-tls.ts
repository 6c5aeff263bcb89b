import { readFileSync } from 'node:fs';
import { connect, type DetailedPeerCertificate } from 'node:tls';
import { experimental, type ChannelCredentials, type ServerCredentials } from '@grpc/grpc-js';
import { identitiesFromSubjectAltName, identityUri, sameIdentity, type TlsIdentity } from '@corral/pki';
import type { RotatingCertificateProvider, TlsMaterial } from './mutual-tls';
import { identityCheckedSslCredentials } from './tls-server-name';

// TLS for a control-plane service that callers reach before they hold a
// certificate (host-registry: agents register with a token, then refresh
// with a refresh token; those are the credentials, the channel only has to
// be private and reach the real registry). The server presents a
// certificate from the internal CA; a client certificate is accepted but
// not required. Callers check the server's certificate names the service
// they meant (its SPIFFE identity), not the address they dialled.

/** Server credentials from rotating material; clients need no certificate of their own. */
export function serverTlsCredentials(provider: RotatingCertificateProvider): ServerCredentials {
  return experimental.createCertificateProviderServerCredentials(provider, provider, false);
}

/**
 * Client credentials that accept the server only if its certificate chains
 * to `caCertificatePem` and names `expectedPeer`. With `clientMaterial`
 * they also present that certificate.
 */
export function serverIdentityChannelCredentials(
  caCertificatePem: string,
  expectedPeer: TlsIdentity,
  clientMaterial?: Pick<TlsMaterial, 'certificatePem' | 'privateKeyPem'>,
): ChannelCredentials {
  return identityCheckedSslCredentials(caCertificatePem, clientMaterial?.privateKeyPem ?? null, clientMaterial?.certificatePem ?? null, (_host, certificate) => {
    const presented = identitiesFromSubjectAltName(certificate.subjectaltname);
    if (presented.some((identity) => sameIdentity(identity, expectedPeer))) return undefined;
    return new Error(`the server's certificate does not name ${identityUri(expectedPeer)}`);
  });
}

function pemOf(certificate: DetailedPeerCertificate): string {
  const base64 = certificate.raw.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${base64}-----END CERTIFICATE-----\n`;
}

/**
 * The self-signed root at the end of the chain a TLS server presents,
 * WITHOUT verifying anything: for first contact with a pin only (the caller
 * checks the root against the pin, then connects again trusting it). Fails
 * when the chain ends in a certificate that is not self-signed (the server
 * did not send its CA).
 */
export function fetchPresentedRootCertificate(address: string, options: { timeoutMs?: number } = {}): Promise<string> {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = Number(address.slice(colon + 1));
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, rejectUnauthorized: false, ALPNProtocols: ['h2'], servername: host.match(/^[\d.:]+$/) ? undefined : host });
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS handshake with ${address} within ${options.timeoutMs ?? 5000} ms`)), options.timeoutMs ?? 5000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      let certificate = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (certificate?.raw && certificate.issuerCertificate && certificate.issuerCertificate !== certificate && !seen.has(certificate.fingerprint256)) {
        seen.add(certificate.fingerprint256);
        if (!certificate.issuerCertificate.raw) break;
        certificate = certificate.issuerCertificate;
      }
      socket.destroy();
      if (!certificate?.raw) return reject(new Error(`${address} presented no certificate`));
      const selfSigned = certificate.issuerCertificate === certificate || certificate.fingerprint256 === certificate.issuerCertificate?.fingerprint256;
      if (!selfSigned) return reject(new Error(`${address} did not present its CA certificate in its chain`));
      resolve(pemOf(certificate));
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * Credentials for calling control-plane service `service` (its certificate
 * names control-plane/<service>) trusting the CA in `caFile`; undefined
 * (plaintext) when no file is configured. A file that cannot be read fails
 * at start naming `variable`.
 */
export function controlPlaneServiceCredentials(caFile: string | undefined, service: string, variable: string): ChannelCredentials | undefined {
  if (!caFile) return undefined;
  let caCertificatePem: string;
  try {
    caCertificatePem = readFileSync(caFile, 'utf8');
  } catch (err) {
    throw new Error(`${variable}: cannot read ${caFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (!caCertificatePem.includes('BEGIN CERTIFICATE')) throw new Error(`${variable} is not a PEM certificate`);
  return serverIdentityChannelCredentials(caCertificatePem, { kind: 'control-plane', service });
}
