import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

// An API key reads `crl_<prefix>_<secret>`: `crl_` says what it is (and lets
// secret scanners find leaked keys), the 8-character prefix is shown in
// listings so people can tell keys apart, and the secret carries the
// entropy. Only a SHA-256 of the whole key is stored: the key has 300+
// random bits, so a fast hash is enough and a slow one would only cost every
// request time.

export const API_KEY_SCHEME = 'crl';
const PREFIX_LENGTH = 8;
// 43 base62 characters ≈ 256 bits.
const SECRET_LENGTH = 43;
const BASE62 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

const KEY_FORMAT = new RegExp(`^${API_KEY_SCHEME}_([A-Za-z0-9]{${PREFIX_LENGTH}})_([A-Za-z0-9]{${SECRET_LENGTH}})$`);

/** Uniformly random base62 text: bytes that would bias the alphabet are skipped. */
function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      // 248 = 4 * 62: bytes at or above it would favour the first characters.
      if (byte < 248 && out.length < length) out += BASE62[byte % 62];
    }
  }
  return out;
}

export interface GeneratedApiKey {
  /** The whole key, shown to its owner once. */
  key: string;
  /** `crl_<prefix>`, stored and shown to tell keys apart. */
  prefix: string;
  /** SHA-256 hex of the whole key: all that is stored of the secret. */
  secretHash: string;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export function generateApiKey(): GeneratedApiKey {
  const prefix = `${API_KEY_SCHEME}_${randomBase62(PREFIX_LENGTH)}`;
  const key = `${prefix}_${randomBase62(SECRET_LENGTH)}`;
  return { key, prefix, secretHash: hashApiKey(key) };
}

/** The displayed prefix of a well-formed key, or undefined for anything else. */
export function apiKeyPrefixOf(presented: string): string | undefined {
  const match = KEY_FORMAT.exec(presented);
  return match ? `${API_KEY_SCHEME}_${match[1]}` : undefined;
}

/** Compares two SHA-256 hex digests in constant time. */
export function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex');
  const right = Buffer.from(b, 'hex');
  return left.length === 32 && right.length === 32 && timingSafeEqual(left, right);
}
