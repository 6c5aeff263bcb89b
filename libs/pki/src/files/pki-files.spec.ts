import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { identitiesFromSubjectAltName } from '../identity/workload-identity';
import { caFilesIn, createCaFiles, issueControlPlaneCertificateFiles } from './pki-files';

describe('PKI files (corral tls, the launcher)', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'corral-pki-files-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('creates a CA with its key 0600, and never replaces it', async () => {
    const ca = await createCaFiles(join(dir, 'ca'));
    expect(ca.created).toBe(true);
    expect(statSync(ca.privateKeyFile).mode & 0o777).toBe(0o600);
    expect(new X509Certificate(readFileSync(ca.certificateFile)).ca).toBe(true);
    const before = readFileSync(ca.certificateFile, 'utf8');
    await expect(createCaFiles(join(dir, 'ca'))).rejects.toMatchObject({ name: 'FailedPreconditionError' });
    await expect(createCaFiles(join(dir, 'ca'), { reuseExisting: true })).resolves.toMatchObject({ created: false });
    expect(readFileSync(ca.certificateFile, 'utf8')).toBe(before);
  });

  it('issues a control-plane client certificate from the CA, and refuses a bad service name or lifetime', async () => {
    const caDir = join(dir, 'ca');
    await createCaFiles(caDir);
    const issued = await issueControlPlaneCertificateFiles({ caDir, outDir: join(dir, 'scheduler'), service: 'scheduler', validForDays: 30 });
    const leaf = new X509Certificate(readFileSync(issued.certificateFile));
    expect(leaf.checkIssued(new X509Certificate(readFileSync(caFilesIn(caDir).certificateFile)))).toBe(true);
    expect(identitiesFromSubjectAltName(leaf.subjectAltName)).toEqual([{ kind: 'control-plane', service: 'scheduler' }]);
    expect(leaf.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(statSync(issued.privateKeyFile).mode & 0o777).toBe(0o600);
    expect(readFileSync(issued.caCertificateFile, 'utf8')).toBe(readFileSync(caFilesIn(caDir).certificateFile, 'utf8'));
    await expect(issueControlPlaneCertificateFiles({ caDir, outDir: dir, service: '../evil' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'service' });
    await expect(issueControlPlaneCertificateFiles({ caDir, outDir: dir, service: 'x', validForDays: 0 })).rejects.toMatchObject({ field: 'days' });
    await expect(issueControlPlaneCertificateFiles({ caDir: join(dir, 'none'), outDir: dir, service: 'x' })).rejects.toMatchObject({ name: 'FailedPreconditionError' });
  });
});
