import { X509Certificate } from 'node:crypto';
import { createCertificateAuthority, CertificateAuthority, verifyCertificateRequest } from './certificate-authority';
import { createCertificateRequest } from '../requests/certificate-request';
import { generateKeyPair } from '../keys/key-pair';
import { identitiesFromSubjectAltName } from '../identity/workload-identity';

describe('CertificateAuthority', () => {
  const now = new Date('2026-12-01T00:00:00Z');
  let material: Awaited<ReturnType<typeof createCertificateAuthority>>;
  let ca: CertificateAuthority;

  beforeAll(async () => {
    material = await createCertificateAuthority({ commonName: 'test CA', now });
    ca = await CertificateAuthority.load(material);
  });

  it('creates a self-signed CA certificate whose key it keeps apart', () => {
    const cert = new X509Certificate(material.certificatePem);
    expect(cert.ca).toBe(true);
    expect(cert.subject).toContain('CN=test CA');
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(material.certificatePem).not.toContain('PRIVATE KEY');
    expect(material.privateKeyPem).toContain('BEGIN PRIVATE KEY');
  });

  it('issues a leaf for the identity it is told, signed by the CA, for the requester\'s key', async () => {
    const keys = generateKeyPair();
    const csrPem = await createCertificateRequest(keys.privateKeyPem, 'whatever the requester says');
    const issued = await ca.issue({ csrPem, identity: { kind: 'host', hostId: 'h-1' }, ipAddresses: ['127.0.0.1'], usages: ['server', 'client'], validForSeconds: 3600, now });
    const leaf = new X509Certificate(issued.certificatePem);
    const root = new X509Certificate(material.certificatePem);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(leaf.checkIssued(root)).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.publicKey.export({ type: 'spki', format: 'pem' })).toBe(keys.publicKeyPem);
    expect(identitiesFromSubjectAltName(leaf.subjectAltName)).toEqual([{ kind: 'host', hostId: 'h-1' }]);
    expect(leaf.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(leaf.subject).not.toContain('whatever the requester says');
    expect(leaf.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    expect(new Date(leaf.validTo).getTime()).toBe(Math.floor((now.getTime() + 3600_000) / 1000) * 1000);
    expect(issued.notAfter.getTime()).toBe(now.getTime() + 3600_000);
  });

  it('issues client-only certificates for control-plane services', async () => {
    const csrPem = await createCertificateRequest(generateKeyPair().privateKeyPem, 'scheduler');
    const issued = await ca.issue({ csrPem, identity: { kind: 'control-plane', service: 'scheduler' }, usages: ['client'], validForSeconds: 60, now });
    const leaf = new X509Certificate(issued.certificatePem);
    expect(leaf.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(identitiesFromSubjectAltName(leaf.subjectAltName)).toEqual([{ kind: 'control-plane', service: 'scheduler' }]);
  });

  it('refuses bad requests, naming the field', async () => {
    const csrPem = await createCertificateRequest(generateKeyPair().privateKeyPem, 'x');
    const base = { identity: { kind: 'host' as const, hostId: 'h-2' }, usages: ['server' as const], validForSeconds: 60, now };
    await expect(ca.issue({ ...base, csrPem: 'garbage' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'csr' });
    // A request whose signature does not match its key: flip a byte near the end (inside the signature).
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    der[der.length - 4] ^= 0xff;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(ca.issue({ ...base, csrPem: tampered })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'csr' });
    // The same checks on their own, for callers that must refuse before spending anything.
    await expect(verifyCertificateRequest('garbage')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'csr' });
    await expect(verifyCertificateRequest(tampered)).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'csr' });
    await expect(verifyCertificateRequest(csrPem)).resolves.toBeUndefined();
    await expect(ca.issue({ ...base, csrPem, validForSeconds: 0 })).rejects.toMatchObject({ field: 'validForSeconds' });
    await expect(ca.issue({ ...base, csrPem, usages: [] })).rejects.toMatchObject({ field: 'usages' });
    await expect(ca.issue({ ...base, csrPem, ipAddresses: ['not-an-ip'] })).rejects.toMatchObject({ field: 'ipAddresses' });
  });

  it('refuses to load a key that does not belong to the CA certificate, or a certificate that is not a CA', async () => {
    const other = await createCertificateAuthority({ now });
    await expect(CertificateAuthority.load({ certificatePem: material.certificatePem, privateKeyPem: other.privateKeyPem })).rejects.toThrow('does not belong');
    const keys = generateKeyPair();
    const leaf = await ca.issue({ csrPem: await createCertificateRequest(keys.privateKeyPem, 'x'), identity: { kind: 'host', hostId: 'h-3' }, usages: ['server'], validForSeconds: 60, now });
    await expect(CertificateAuthority.load({ certificatePem: leaf.certificatePem, privateKeyPem: keys.privateKeyPem })).rejects.toThrow('not a CA');
  });
});
