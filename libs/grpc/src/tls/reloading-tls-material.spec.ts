import { mkdtempSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority, createCertificateAuthority, createCertificateRequest, generateKeyPair } from '@corral/pki';
import { ReloadingTlsMaterial } from './reloading-tls-material';
import type { TlsMaterial } from './mutual-tls';

// Certificate files replaced while a service runs: taken once they hang
// together, checked no more often than asked, never half-written.

describe('ReloadingTlsMaterial', () => {
  let ca: CertificateAuthority;
  let otherCa: CertificateAuthority;
  let dir: string;
  let clock = 0;
  const files = () => ({ caFile: join(dir, 'ca.pem'), certFile: join(dir, 'svc.pem'), keyFile: join(dir, 'svc-key.pem') });
  const variables = { ca: 'X_CA_FILE', cert: 'X_CERT_FILE', key: 'X_KEY_FILE' };

  async function issue(authority = ca): Promise<TlsMaterial> {
    const keys = generateKeyPair();
    const issued = await authority.issue({
      csrPem: await createCertificateRequest(keys.privateKeyPem, 'svc'),
      identity: { kind: 'control-plane', service: 'scheduler' },
      usages: ['client'],
      validForSeconds: 3600,
      now: new Date(),
    });
    return { caCertificatePem: authority.certificatePem, certificatePem: issued.certificatePem, privateKeyPem: keys.privateKeyPem };
  }
  // Like the PKI file writers: each file whole, by rename.
  const put = (path: string, content: string) => {
    writeFileSync(`${path}.tmp`, content, { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  };
  const write = (m: TlsMaterial, only?: 'key' | 'cert') => {
    const f = files();
    if (!only) put(f.caFile, m.caCertificatePem);
    if (only !== 'key') put(f.certFile, m.certificatePem);
    if (only !== 'cert') put(f.keyFile, m.privateKeyPem);
  };

  beforeAll(async () => {
    ca = await CertificateAuthority.load(await createCertificateAuthority());
    otherCa = await CertificateAuthority.load(await createCertificateAuthority());
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'corral-reload-tls-'));
    clock = 0;
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const load = (events: string[] = []) =>
    ReloadingTlsMaterial.load(files(), { variables, recheckMs: 1000, now: () => clock, onReload: () => events.push('reload'), onRejected: (why) => events.push(`rejected: ${why}`) });

  it('takes replaced files once the recheck period has passed, and keeps the same object until then', async () => {
    const first = await issue();
    write(first);
    const events: string[] = [];
    const source = load(events);
    expect(source.current()).toEqual(first);
    const held = source.current();

    const second = await issue();
    write(second);
    clock += 999;
    expect(source.current()).toBe(held);
    clock += 1;
    expect(source.current()).toEqual(second);
    expect(source.current()).toBe(source.current());
    expect(events).toEqual(['reload']);
  });

  it('keeps the previous material while only the key is new, and takes both once the certificate follows', async () => {
    const first = await issue();
    write(first);
    const events: string[] = [];
    const source = load(events);
    const second = await issue();

    write(second, 'key');
    clock += 1000;
    expect(source.current()).toEqual(first);
    expect(events).toEqual(['rejected: X_KEY_FILE is not the key of X_CERT_FILE']);

    write(second, 'cert');
    clock += 1000;
    expect(source.current()).toEqual(second);
    expect(events.at(-1)).toBe('reload');
  });

  it('refuses a certificate from another CA, and a vanished file, keeping what works', async () => {
    const first = await issue();
    write(first);
    const events: string[] = [];
    const source = load(events);
    const foreign = await issue(otherCa);
    write(foreign, 'cert');
    write(foreign, 'key');
    clock += 1000;
    expect(source.current()).toEqual(first);
    expect(events).toEqual(['rejected: X_CERT_FILE is not signed by X_CA_FILE']);

    rmSync(files().certFile);
    clock += 1000;
    expect(source.current()).toEqual(first);
    expect(events.at(-1)).toMatch(/^rejected: X_CERT_FILE: cannot read .*ENOENT$/);
  });

  it('fails the start naming the variable of a file that is missing or does not hang together, never its content', async () => {
    expect(() => load()).toThrow(/^X_CA_FILE: cannot read .*ENOENT$/);
    const first = await issue();
    const second = await issue();
    write(first);
    write(second, 'key');
    expect(() => load()).toThrow('X_KEY_FILE is not the key of X_CERT_FILE');
    put(files().keyFile, 'not a key');
    expect(() => load()).toThrow('X_KEY_FILE is not a PEM private key');
  });
});
