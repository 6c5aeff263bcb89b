import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidSubjectTokenError } from '@corral/events';
import { NATS_NAMESPACE_FILE, natsSubjectNamespaceFor } from './nats-namespace';

describe('the NATS subject namespace of a launched system', () => {
  const dirs: string[] = [];
  const dataDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'corral-ns-'));
    dirs.push(dir);
    return dir;
  };
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('is unique per data dir and kept across restarts', () => {
    const [a, b] = [dataDir(), dataDir()];
    const first = natsSubjectNamespaceFor(a, undefined);
    expect(first).toMatch(/^corral-[0-9a-f]{12}$/);
    expect(natsSubjectNamespaceFor(a, undefined)).toBe(first);
    expect(readFileSync(join(a, NATS_NAMESPACE_FILE), 'utf8').trim()).toBe(first);
    expect(natsSubjectNamespaceFor(b, undefined)).not.toBe(first);
  });

  it('can be given, including empty for the bare subjects, and is checked', () => {
    const dir = dataDir();
    expect(natsSubjectNamespaceFor(dir, 'staging')).toBe('staging');
    expect(natsSubjectNamespaceFor(dir, '')).toBe('');
    expect(() => natsSubjectNamespaceFor(dir, 'a.b')).toThrow(InvalidSubjectTokenError);
  });
});
