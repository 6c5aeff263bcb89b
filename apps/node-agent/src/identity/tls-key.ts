import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCertificateRequest, generateKeyPair } from '@corral/pki';
import type { TlsMaterial } from '@corral/grpc';
import { writeFileAtomic } from '../state/atomic-file';
import type { HostIdentity } from './identity';

// The key this agent serves mutual TLS with. Made once and kept (0600) in
// the state dir: registration and every refresh send a CSR for it, so a
// renewal only replaces the certificate, which travels in identity.json with
// the JWT pair (persisted before use, like the pair). The key never leaves
// this file: not in requests, logs or errors.

export const TLS_KEY_FILE = 'tls-key.pem';

export interface AgentTlsKey {
  /** A secret. */
  privateKeyPem: string;
  /** PKCS#10 for the key; the registry ignores everything in it but the key. */
  csrPem: string;
}

export async function ensureTlsKey(stateDir: string): Promise<AgentTlsKey> {
  const path = join(stateDir, TLS_KEY_FILE);
  let privateKeyPem: string;
  try {
    privateKeyPem = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    privateKeyPem = generateKeyPair().privateKeyPem;
    await writeFileAtomic(path, privateKeyPem);
  }
  return { privateKeyPem, csrPem: await createCertificateRequest(privateKeyPem, 'corral-node-agent') };
}

/**
 * What the gRPC server needs, when the identity holds a certificate for this
 * key. A certificate for another key (tls-key.pem was lost and made anew)
 * is not served: the server then drops connections until the next refresh
 * brings a certificate for the new key.
 */
export function tlsMaterialOf(identity: HostIdentity | undefined, key: AgentTlsKey | undefined): TlsMaterial | undefined {
  if (!identity?.tls || !key) return undefined;
  if (!new X509Certificate(identity.tls.certificatePem).checkPrivateKey(createPrivateKey(key.privateKeyPem))) return undefined;
  return { caCertificatePem: identity.tls.caCertificatePem, certificatePem: identity.tls.certificatePem, privateKeyPem: key.privateKeyPem };
}
