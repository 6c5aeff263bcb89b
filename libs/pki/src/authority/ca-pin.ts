import { createHash, X509Certificate } from 'node:crypto';
import { InvalidArgumentError } from '@corral/domain';

// A CA pin, like kubeadm's --discovery-token-ca-cert-hash: the SHA-256 of
// the CA certificate's DER encoding, in hex. A new host given only the pin
// can take the CA from the TLS handshake of its first contact, check it
// against the pin, and trust it from then on.

const PIN_PATTERN = /^[0-9a-f]{64}$/;

/** Hex SHA-256 of the certificate's DER (lowercase, no separators). */
export function caCertificatePin(certificatePem: string): string {
  return createHash('sha256').update(new X509Certificate(certificatePem).raw).digest('hex');
}

/**
 * A pin as people paste it: `sha256:` prefix, colons and case are ignored.
 * InvalidArgument naming `field` for anything that is not 64 hex digits.
 */
export function normalizeCaPin(pin: string, field = 'caPin'): string {
  const bare = pin.trim().toLowerCase().replace(/^sha256:/, '').replace(/:/g, '');
  if (!PIN_PATTERN.test(bare)) throw new InvalidArgumentError('must be the hex SHA-256 of the CA certificate (64 hex digits, `corral tls ca pin`)', { field });
  return bare;
}

/** Whether `certificatePem` is the CA the pin names. */
export function matchesCaPin(certificatePem: string, pin: string): boolean {
  return caCertificatePin(certificatePem) === normalizeCaPin(pin);
}
