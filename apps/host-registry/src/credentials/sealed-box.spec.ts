import { SealedBox } from './sealed-box';

describe('SealedBox', () => {
  const box = new SealedBox('k'.repeat(32));

  it('opens what it sealed, for the same purpose and row only', () => {
    const sealed = box.seal('signing-key', 'private pem', 'signing-key:a');
    expect(sealed).not.toContain('private pem');
    expect(box.open('signing-key', sealed, 'signing-key:a')).toBe('private pem');
    expect(() => box.open('signing-key', sealed, 'signing-key:b')).toThrow();
    expect(() => box.open('refresh-reissue', sealed, 'signing-key:a')).toThrow();
    expect(() => new SealedBox('j'.repeat(32)).open('signing-key', sealed, 'signing-key:a')).toThrow();
  });

  it('uses a fresh IV each time and detects tampering', () => {
    const a = box.seal('refresh-reissue', 'x', 'r');
    expect(box.seal('refresh-reissue', 'x', 'r')).not.toBe(a);
    const parts = a.split('.');
    // Flip one bit of the ciphertext: replacing it with a chosen byte would
    // leave it unchanged whenever the encryption happened to produce that byte.
    const body = Buffer.from(parts[3], 'base64url');
    body[0] ^= 0x01;
    parts[3] = body.toString('base64url');
    expect(() => box.open('refresh-reissue', parts.join('.'), 'r')).toThrow();
  });

  it('refuses a secret shorter than 32 bytes', () => {
    expect(() => new SealedBox('short')).toThrow('at least 32 bytes');
  });
});
