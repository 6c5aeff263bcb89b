import { createHash, X509Certificate } from 'node:crypto';
import { createCertificateAuthority } from './certificate-authority';
import { caCertificatePin, matchesCaPin, normalizeCaPin } from './ca-pin';

describe('CA pins', () => {
  it('is the hex SHA-256 of the certificate DER, matched however it is pasted', async () => {
    const { certificatePem } = await createCertificateAuthority();
    const pin = caCertificatePin(certificatePem);
    expect(pin).toBe(createHash('sha256').update(new X509Certificate(certificatePem).raw).digest('hex'));
    expect(matchesCaPin(certificatePem, `sha256:${pin.toUpperCase()}`)).toBe(true);
    expect(matchesCaPin(certificatePem, pin.match(/../g)!.join(':'))).toBe(true);
    expect(matchesCaPin((await createCertificateAuthority()).certificatePem, pin)).toBe(false);
  });

  it('refuses what is not a SHA-256, naming the field', () => {
    expect(() => normalizeCaPin('abc', 'AGENT_CONTROL_PLANE_CA_SHA256')).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', field: 'AGENT_CONTROL_PLANE_CA_SHA256' }));
  });
});
