import { createHash, randomBytes } from 'node:crypto';

/** A random bearer secret with a recognisable prefix (so leaked ones can be found by scanners). */
export function newBearerSecret(prefix: string): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}
