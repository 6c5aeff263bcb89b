import * as x509 from '@peculiar/x509';
import { importKeyPair, SIGNING_ALGORITHM } from '../keys/key-pair';
import '../authority/crypto-provider';

/**
 * A PKCS#10 request: proves the requester holds the private key. Nothing
 * else in it is trusted: the authority decides the identity and names.
 */
export async function createCertificateRequest(privateKeyPem: string, commonName: string): Promise<string> {
  const keys = await importKeyPair({ privateKeyPem });
  const request = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [commonName] }],
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
  });
  return request.toString('pem');
}
