import { createPrivateKey, createPublicKey, generateKeyPairSync, webcrypto } from 'node:crypto';

// Every key Corral makes for TLS is ECDSA P-256: small, fast to generate on
// an agent at registration, and accepted by every TLS stack gRPC uses.

export const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
export const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface PemKeyPair {
  /** PKCS#8. A secret: never logged, stored 0600 or sealed. */
  privateKeyPem: string;
  /** SPKI. */
  publicKeyPem: string;
}

export function generateKeyPair(): PemKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** WebCrypto keys for @peculiar/x509, which signs through WebCrypto. */
export async function importKeyPair(pair: Pick<PemKeyPair, 'privateKeyPem'>): Promise<webcrypto.CryptoKeyPair> {
  const privateKey = createPrivateKey(pair.privateKeyPem);
  const details = privateKey.asymmetricKeyDetails;
  if (privateKey.asymmetricKeyType !== 'ec' || details?.namedCurve !== 'prime256v1') {
    throw new Error('only ECDSA P-256 keys are supported');
  }
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const subtle = webcrypto.subtle;
  return {
    privateKey: (await subtle.importKey('pkcs8', pkcs8, KEY_ALGORITHM, true, ['sign'])) as webcrypto.CryptoKey,
    publicKey: (await subtle.importKey('spki', spki, KEY_ALGORITHM, true, ['verify'])) as webcrypto.CryptoKey,
  };
}
