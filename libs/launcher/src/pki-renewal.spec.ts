import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReloadingTlsMaterial } from '@corral/grpc';
import { CONTROL_PLANE_CERTIFICATE_DAYS, ensureLocalPki, renewControlPlaneCertificates, scheduleControlPlaneRenewal, type LocalPki } from './pki';

// The launcher keeps control-plane certificates valid while the system runs:
// it re-issues them at 2/3 of their life into the files the scheduler
// reloads, and swaps its own probe certificate in place.

describe('control-plane certificate renewal (launcher)', () => {
  let dataDir: string;
  let pki: LocalPki;
  const serialOf = (file: string) => new X509Certificate(readFileSync(join(pki.dir, file), 'utf8')).serialNumber;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'corral-pki-renewal-'));
    pki = await ensureLocalPki(dataDir);
  });
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it("re-issues the scheduler's, reconciler's and launcher's certificates into the same files, as sets the scheduler takes", async () => {
    const before = ['scheduler.pem', 'reconciler.pem', 'launcher.pem'].map(serialOf);
    const watched = ReloadingTlsMaterial.load(
      { caFile: pki.schedulerEnv.AGENT_TLS_CA_FILE, certFile: pki.schedulerEnv.AGENT_TLS_CERT_FILE, keyFile: pki.schedulerEnv.AGENT_TLS_KEY_FILE },
      { variables: { ca: 'AGENT_TLS_CA_FILE', cert: 'AGENT_TLS_CERT_FILE', key: 'AGENT_TLS_KEY_FILE' }, recheckMs: 0 },
    );
    const held = watched.current();
    const launcherBefore = pki.launcher.certificatePem;
    const issuedAt = new Date(Date.now() + 20 * 86_400_000);

    await renewControlPlaneCertificates(pki, issuedAt);

    const after = ['scheduler.pem', 'reconciler.pem', 'launcher.pem'].map(serialOf);
    after.forEach((serial, i) => expect(serial).not.toBe(before[i]));
    const renewed = watched.current();
    expect(renewed).not.toBe(held);
    expect(new X509Certificate(renewed.certificatePem).validTo).toBe(new X509Certificate(readFileSync(pki.schedulerEnv.AGENT_TLS_CERT_FILE, 'utf8')).validTo);
    expect(Date.parse(new X509Certificate(renewed.certificatePem).validTo)).toBeGreaterThan(issuedAt.getTime() + (CONTROL_PLANE_CERTIFICATE_DAYS - 1) * 86_400_000);
    expect(pki.launcher.certificatePem).not.toBe(launcherBefore);
    expect(pki.launcher.certificatePem).toBe(readFileSync(join(pki.dir, 'launcher.pem'), 'utf8'));
  });

  it('renews at 2/3 of the lifetime and again after each renewal, until stopped', async () => {
    const armed: { fn: () => void; ms: number }[] = [];
    const cleared: unknown[] = [];
    let renewed = 0;
    const renewal = scheduleControlPlaneRenewal(pki, {
      // A handle is the count armed so far.
      timer: { set: (fn, ms) => armed.push({ fn, ms }), clear: (handle) => cleared.push(handle) },
      onRenewed: () => renewed++,
    });
    const twoThirds = Math.round((CONTROL_PLANE_CERTIFICATE_DAYS * 86_400_000 * 2) / 3);
    expect(armed).toEqual([{ fn: expect.any(Function), ms: twoThirds }]);

    const before = serialOf('scheduler.pem');
    armed[0].fn();
    await new Promise<void>((resolve) => {
      const poll = () => (renewed === 1 ? resolve() : setImmediate(poll));
      poll();
    });
    expect(serialOf('scheduler.pem')).not.toBe(before);
    expect(armed.map((a) => a.ms)).toEqual([twoThirds, twoThirds]);

    renewal.stop();
    expect(cleared).toEqual([2]);
  });
});
