// TLS to a real nats-server: a server started with a certificate from a
// throw-away CA accepts a client that trusts that CA, and refuses one that
// trusts nothing, another CA, or (with verify on) has no client certificate.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveProgram, spawnSupervised, type SupervisedProcess } from '@corral/exec';
import { InstanceState } from '@corral/proto';
import { CertificateAuthority, createCertificateAuthority, createCertificateRequest, generateKeyPair, issueControlPlaneServerCertificate } from '@corral/pki';
import { connectEventBus } from '../bus';
import { Topics } from '../topics';
import { recordingLogger } from '../__tests__/helpers';
import { writeNatsServerConfig } from './nats-server-config';
import type { NatsTlsOptions } from './nats-tls';

const CANDIDATES = ['/usr/sbin/nats-server', '/usr/local/bin/nats-server', '/usr/bin/nats-server', 'nats-server'];

function findNatsServer(): string | undefined {
  for (const candidate of CANDIDATES) {
    try {
      return resolveProgram(candidate, process.env.PATH ?? '');
    } catch {
      // not here
    }
  }
  console.log('[skip] NATS TLS against a real nats-server: no nats-server binary (apt-get install nats-server)');
  return undefined;
}

const natsServer = findNatsServer();

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

async function waitForPort(port: number, proc: SupervisedProcess, logPath: string): Promise<void> {
  const { connect } = await import('node:net');
  let exited = false;
  void proc.wait().then(() => (exited = true));
  for (let i = 0; i < 200; i++) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port }, () => {
        socket.end();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (exited) throw new Error(`nats-server exited; see ${logPath}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nats-server did not listen; see ${logPath}`);
}

(natsServer ? describe : describe.skip)('NATS TLS against a real nats-server', () => {
  let dir: string;
  const servers: SupervisedProcess[] = [];
  const files = { ca: '', otherCa: '', cert: '', key: '', clientCert: '', clientKey: '' };

  async function startServer(verifyClients: boolean): Promise<string> {
    const port = await freePort();
    const configFile = join(dir, `nats-${port}.conf`);
    writeNatsServerConfig(configFile, { host: '127.0.0.1', port, tls: { certFile: files.cert, keyFile: files.key, caFile: files.ca, verifyClients } });
    const logPath = join(dir, `nats-${port}.log`);
    const proc = await spawnSupervised({ program: natsServer as string, args: ['-c', configFile], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, cwd: dir, logPath });
    servers.push(proc);
    await waitForPort(port, proc, logPath);
    return `nats://127.0.0.1:${port}`;
  }

  const connectWith = (url: string, tls: NatsTlsOptions | undefined) =>
    connectEventBus({ url, name: 'corral-tls-test', logger: recordingLogger(), connectTimeoutMs: 3000, ...(tls ? { tls } : {}) });

  let url: string;
  let verifyingUrl: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'corral-nats-tls-'));
    const created = await createCertificateAuthority();
    const ca = await CertificateAuthority.load(created);
    const server = await issueControlPlaneServerCertificate(ca, { service: 'nats', names: ['127.0.0.1', 'localhost'], validForSeconds: 3600 });
    const clientKeys = generateKeyPair();
    const client = await ca.issue({
      csrPem: await createCertificateRequest(clientKeys.privateKeyPem, 'scheduler'),
      identity: { kind: 'control-plane', service: 'scheduler' },
      usages: ['client'],
      validForSeconds: 3600,
      now: new Date(),
    });
    const write = (name: string, content: string) => {
      const path = join(dir, name);
      writeFileSync(path, content, { mode: 0o600 });
      return path;
    };
    files.ca = write('ca.pem', created.certificatePem);
    files.otherCa = write('other-ca.pem', (await createCertificateAuthority()).certificatePem);
    files.cert = write('nats.pem', server.certificatePem);
    files.key = write('nats-key.pem', server.privateKeyPem);
    files.clientCert = write('client.pem', client.certificatePem);
    files.clientKey = write('client-key.pem', clientKeys.privateKeyPem);
    url = await startServer(false);
    verifyingUrl = await startServer(true);
  }, 30_000);

  afterAll(async () => {
    for (const proc of servers) {
      proc.kill('SIGTERM');
      await proc.wait();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('connects with the CA and carries events', async () => {
    const bus = await connectWith(url, { caFile: files.ca });
    try {
      const seen: string[] = [];
      bus.subscribe(Topics.workloadState, (event) => void seen.push(event.workloadId), { key: 'tls-w1' });
      await bus.flush();
      bus.publish(Topics.workloadState, 'tls-w1', { workloadId: 'tls-w1', hostId: 'h', seq: 1, state: InstanceState.INSTANCE_STATE_RUNNING, exited: false, exitCode: 0, reason: '', at: new Date(), hostToken: '', ports: [], portsReported: false });
      for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(seen).toEqual(['tls-w1']);
    } finally {
      await bus.close();
    }
  });

  it('is refused without the CA (the server certificate is not trusted)', async () => {
    await expect(connectWith(url, {})).rejects.toThrow();
  });

  it('is refused when trusting another CA', async () => {
    await expect(connectWith(url, { caFile: files.otherCa })).rejects.toThrow();
  });

  it('is refused in plaintext', async () => {
    await expect(connectWith(url, undefined)).rejects.toThrow();
  });

  it('needs a client certificate when the server verifies clients', async () => {
    await expect(connectWith(verifyingUrl, { caFile: files.ca })).rejects.toThrow();
    const bus = await connectWith(verifyingUrl, { caFile: files.ca, certFile: files.clientCert, keyFile: files.clientKey });
    await bus.close();
  });

  it('names the variable of a file it cannot read', async () => {
    await expect(connectWith(url, { caFile: join(dir, 'missing.pem') })).rejects.toThrow(/NATS_TLS_CA_FILE: cannot read .*missing\.pem: ENOENT/);
  });
});
