import { chmod, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

// The first admin key is shown once, plainly, on stdout (not in the JSON log
// stream, which may be shipped elsewhere), like Vault's dev root token.

export function adminKeyBanner(key: string): string {
  const rule = '='.repeat(72);
  return [
    '',
    rule,
    ' Corral: first admin API key created',
    '',
    ` ${key}`,
    '',
    ' It is shown only this once and only its hash is stored. Keep it safe.',
    ' Use it as "Authorization: Bearer <key>", or: export CORRAL_API_KEY=<key>',
    ' Lost it? corral admin reissue-key --database-url <url>',
    rule,
    '',
    '',
  ].join('\n');
}

/**
 * Writes the key to `path` readable by its owner only. Written under a
 * temporary name and renamed, so a reader never sees a partial key and an
 * existing file's looser mode is not inherited.
 */
export async function writeAdminKeyFile(path: string, key: string): Promise<void> {
  const temporary = join(dirname(path), `.${randomBytes(6).toString('hex')}.tmp`);
  await writeFile(temporary, `${key}\n`, { mode: 0o600, flag: 'wx' });
  await chmod(temporary, 0o600);
  await rename(temporary, path);
}
