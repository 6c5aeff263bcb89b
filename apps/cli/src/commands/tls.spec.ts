import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { caCertificatePin, identitiesFromSubjectAltName } from '@corral/pki';
import { runCli } from '../run-cli';

class Capture {
  chunks: Buffer[] = [];
  write(chunk: string | Uint8Array) {
    this.chunks.push(Buffer.from(chunk));
    return true;
  }
  get text() {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

// `corral tls` works offline: nothing listens at the (unreachable) address.
describe('corral tls', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'corral-cli-tls-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  async function corral(args: string[]) {
    const stdout = new Capture();
    const stderr = new Capture();
    const code = await runCli(args, { stdout, stderr, env: { CORRAL_ADDR: '127.0.0.1:1' } });
    return { code, stdout: stdout.text, stderr: stderr.text };
  }

  it('creates a CA, then a scheduler certificate from it, without printing a key', async () => {
    const ca = await corral(['tls', 'ca', 'create', '--dir', join(dir, 'pki')]);
    expect(ca).toMatchObject({ code: 0, stderr: '' });
    expect(ca.stdout).toContain(join(dir, 'pki', 'ca.pem'));
    expect(statSync(join(dir, 'pki', 'ca-key.pem')).mode & 0o777).toBe(0o600);

    const cert = await corral(['tls', 'cert', 'create', '--service', 'scheduler', '--ca-dir', join(dir, 'pki'), '--out', join(dir, 'scheduler'), '-o', 'json']);
    expect(cert).toMatchObject({ code: 0, stderr: '' });
    const view = JSON.parse(cert.stdout);
    expect(view).toMatchObject({ service: 'scheduler', certificateFile: join(dir, 'scheduler', 'scheduler.pem'), privateKeyFile: join(dir, 'scheduler', 'scheduler-key.pem') });
    const leaf = new X509Certificate(readFileSync(view.certificateFile));
    expect(leaf.checkIssued(new X509Certificate(readFileSync(join(dir, 'pki', 'ca.pem'))))).toBe(true);
    expect(identitiesFromSubjectAltName(leaf.subjectAltName)).toEqual([{ kind: 'control-plane', service: 'scheduler' }]);
    expect(cert.stdout + ca.stdout).not.toContain('PRIVATE KEY');
  });

  it('prints the CA pin agents take as AGENT_CONTROL_PLANE_CA_SHA256, on create and on its own', async () => {
    const created = await corral(['tls', 'ca', 'create', '--dir', dir]);
    const pin = caCertificatePin(readFileSync(join(dir, 'ca.pem'), 'utf8'));
    expect(created.stdout).toContain(pin);
    expect(await corral(['tls', 'ca', 'pin', '--dir', dir])).toEqual({ code: 0, stdout: `${pin}\n`, stderr: '' });
    const json = await corral(['tls', 'ca', 'pin', '--cert', join(dir, 'ca.pem'), '-o', 'json']);
    expect(JSON.parse(json.stdout)).toEqual({ certificateFile: join(dir, 'ca.pem'), sha256: pin });
    const missing = await corral(['tls', 'ca', 'pin', '--dir', join(dir, 'nowhere')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('cannot read');
    expect((await corral(['tls', 'ca', 'pin'])).code).toBe(1);
  });

  it('refuses to replace a CA, and reports bad input naming the field', async () => {
    expect((await corral(['tls', 'ca', 'create', '--dir', dir])).code).toBe(0);
    const again = await corral(['tls', 'ca', 'create', '--dir', dir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('a CA already exists');
    const bad = await corral(['tls', 'cert', 'create', '--service', 'a/b', '--ca-dir', dir, '--out', dir]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('(field: service)');
    expect((await corral(['tls', 'cert', 'create', '--service', 'scheduler', '--out', dir])).code).toBe(2);
  });
});
