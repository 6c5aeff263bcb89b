import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

// Encryption at rest for what host-registry must be able to read back: the
// private halves of its signing keys, and the sealed copy of a credential
// pair kept for the refresh retry window. AES-256-GCM under a key derived
// (HKDF-SHA256) from HOST_KEY_ENCRYPTION_KEY, one derived key per purpose;
// the associated data binds each ciphertext to the row it belongs to, so a
// ciphertext copied into another row does not open.

export const MIN_KEY_ENCRYPTION_SECRET_BYTES = 32;

const FORMAT = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;

export type SealPurpose = 'signing-key' | 'refresh-reissue';

export class SealedBox {
  private readonly keys = new Map<SealPurpose, Buffer>();

  constructor(secret: string) {
    if (Buffer.byteLength(secret, 'utf8') < MIN_KEY_ENCRYPTION_SECRET_BYTES) {
      throw new Error(`the key-encryption secret must be at least ${MIN_KEY_ENCRYPTION_SECRET_BYTES} bytes`);
    }
    for (const purpose of ['signing-key', 'refresh-reissue'] as const) {
      this.keys.set(purpose, Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), 'corral-host-registry', `corral/${purpose}/v1`, 32)));
    }
  }

  /** `v1.<iv>.<tag>.<ciphertext>`, base64url parts. */
  seal(purpose: SealPurpose, plaintext: string, associatedData: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key(purpose), iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(Buffer.from(associatedData, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [FORMAT, iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), body.toString('base64url')].join('.');
  }

  /** Throws when the ciphertext was altered, sealed under another secret, or for another row. */
  open(purpose: SealPurpose, sealed: string, associatedData: string): string {
    const [format, iv, tag, body, ...rest] = sealed.split('.');
    if (format !== FORMAT || iv === undefined || tag === undefined || body === undefined || rest.length > 0) throw new Error('not a sealed value');
    const decipher = createDecipheriv('aes-256-gcm', this.key(purpose), Buffer.from(iv, 'base64url'), { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(associatedData, 'utf8'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
  }

  private key(purpose: SealPurpose): Buffer {
    const key = this.keys.get(purpose);
    if (!key) throw new Error(`unknown seal purpose ${purpose}`);
    return key;
  }
}
