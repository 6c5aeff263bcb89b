import { randomBytes, createPublicKey, createPrivateKey, X509Certificate, type webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { InvalidArgumentError } from '@corral/domain';
import { generateKeyPair, importKeyPair, SIGNING_ALGORITHM } from '../keys/key-pair';
import { identityUri, type TlsIdentity } from '../identity/workload-identity';
import './crypto-provider';

// Corral's internal certificate authority, for mutual TLS between the
// control plane and its agents (and later the edge's internal certificates).
// Like `nomad tls ca create`: a long-lived self-signed root whose key stays
// with the control plane; leaf certificates are short-lived and re-issued on
// renewal. The authority trusts nothing a request says but its public key.

export interface CaMaterial {
  certificatePem: string;
  /** A secret: stored 0600 or sealed, never logged. */
  privateKeyPem: string;
}

export type CertificateUsage = 'server' | 'client';

export interface IssueRequest {
  /** PKCS#10 request; proves possession of the key being certified. */
  csrPem: string;
  identity: TlsIdentity;
  dnsNames?: string[];
  ipAddresses?: string[];
  usages: CertificateUsage[];
  validForSeconds: number;
  now: Date;
}

export interface IssuedCertificate {
  certificatePem: string;
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
}

/** Backdating absorbs clock skew between the authority and the peers that check its certificates. */
const BACKDATE_MS = 5 * 60_000;
const MAX_LEAF_VALIDITY_SECONDS = 397 * 24 * 3600;

function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f; // positive
  return bytes.toString('hex');
}

async function parseCertificateRequest(csrPem: string): Promise<x509.Pkcs10CertificateRequest> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (cause) {
    throw new InvalidArgumentError('not a PEM certificate signing request', { field: 'csr', cause });
  }
  if (!(await csr.verify())) throw new InvalidArgumentError('the request is not signed by the key it carries', { field: 'csr' });
  const algorithm = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
  if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256') throw new InvalidArgumentError('the key must be ECDSA P-256', { field: 'csr' });
  return csr;
}

/**
 * The checks `issue` makes on a request, on their own: lets a caller refuse
 * a bad request (InvalidArgument naming `csr`) before it spends anything,
 * such as a single-use registration token.
 */
export async function verifyCertificateRequest(csrPem: string): Promise<void> {
  await parseCertificateRequest(csrPem);
}

export async function createCertificateAuthority(options: { commonName?: string; validForDays?: number; now?: Date } = {}): Promise<CaMaterial> {
  const now = options.now ?? new Date();
  const { privateKeyPem } = generateKeyPair();
  const keys = await importKeyPair({ privateKeyPem });
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: [{ CN: [options.commonName ?? 'Corral internal CA'] }],
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + (options.validForDays ?? 3650) * 24 * 3600_000),
    signingAlgorithm: SIGNING_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certificatePem: certificate.toString('pem'), privateKeyPem };
}

export class CertificateAuthority {
  private constructor(
    readonly certificatePem: string,
    private readonly certificate: x509.X509Certificate,
    private readonly signingKey: webcrypto.CryptoKey,
  ) {}

  /** Checks the material is a CA certificate with its own private key before using it. */
  static async load(material: CaMaterial): Promise<CertificateAuthority> {
    const native = new X509Certificate(material.certificatePem);
    if (!native.ca) throw new Error('the CA certificate is not a CA (basicConstraints cA is not set)');
    const publicFromKey = createPublicKey(createPrivateKey(material.privateKeyPem)).export({ type: 'spki', format: 'der' });
    const publicFromCert = native.publicKey.export({ type: 'spki', format: 'der' });
    if (!publicFromKey.equals(publicFromCert)) throw new Error('the CA private key does not belong to the CA certificate');
    const keys = await importKeyPair(material);
    return new CertificateAuthority(material.certificatePem, new x509.X509Certificate(material.certificatePem), keys.privateKey);
  }

  async issue(request: IssueRequest): Promise<IssuedCertificate> {
    const csr = await parseCertificateRequest(request.csrPem);
    if (!(request.validForSeconds > 0 && request.validForSeconds <= MAX_LEAF_VALIDITY_SECONDS)) {
      throw new InvalidArgumentError(`must be between 1 and ${MAX_LEAF_VALIDITY_SECONDS}`, { field: 'validForSeconds' });
    }
    if (request.usages.length === 0) throw new InvalidArgumentError('at least one usage is required', { field: 'usages' });
    const names: x509.JsonGeneralName[] = [{ type: 'url', value: identityUri(request.identity) }];
    for (const dns of request.dnsNames ?? []) names.push({ type: 'dns', value: dns });
    for (const ip of request.ipAddresses ?? []) {
      if (isIP(ip) === 0) throw new InvalidArgumentError(`not an IP address: ${ip}`, { field: 'ipAddresses' });
      names.push({ type: 'ip', value: ip });
    }
    const usages = [];
    if (request.usages.includes('server')) usages.push(x509.ExtendedKeyUsage.serverAuth);
    if (request.usages.includes('client')) usages.push(x509.ExtendedKeyUsage.clientAuth);
    const notBefore = new Date(request.now.getTime() - BACKDATE_MS);
    const notAfter = new Date(request.now.getTime() + request.validForSeconds * 1000);
    const serial = serialNumber();
    const certificate = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: [{ CN: [identityUri(request.identity)] }],
      issuer: this.certificate.subject,
      notBefore,
      notAfter,
      signingAlgorithm: SIGNING_ALGORITHM,
      publicKey: csr.publicKey,
      signingKey: this.signingKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
        new x509.ExtendedKeyUsageExtension(usages, false),
        new x509.SubjectAlternativeNameExtension(names, false),
        await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.certificate),
      ],
    });
    return { certificatePem: certificate.toString('pem'), serialNumber: serial, notBefore, notAfter };
  }
}
