import tls from 'node:tls';
import { credentials } from '@grpc/grpc-js';
import { isIP } from 'node:net';
import vm from 'node:vm';
import { silentLogger } from '@corral/logging';
import { CertificateAuthority, createCertificateAuthority, createCertificateRequest, generateKeyPair, type TlsIdentity } from '@corral/pki';
import { schedulerV1 } from '@corral/proto';
import { createClient } from '../client/client';
import { checkHealth } from '../client/health';
import { implementUnary } from '../server/handlers';
import { startGrpcServer, type RunningGrpcServer } from '../server/server';
import { mutualTlsChannelCredentials, mutualTlsProbeCredentials, mutualTlsServerCredentials, RotatingCertificateProvider, type TlsMaterial } from './mutual-tls';
import { serverIdentityChannelCredentials } from './server-tls';
import { IDENTITY_CHECKED_SERVER_NAME, tlsChannelOptions } from './tls-server-name';

// Real TLS calls to an IP address (127.0.0.1) with each of Corral's
// identity-checked credentials: Node must not warn DEP0123 ("Setting the TLS
// ServerName to an IP address is not permitted"), and the ServerName on the
// wire is the fixed DNS-shaped one. Node emits its warnings on the real
// process object, of which jest's sandbox has a copy: the listener goes on
// the one `vm.runInThisContext` reaches. Node warns only once per process, so
// the ServerNames handed to tls.connect are recorded too: that check holds
// whichever test file ran before this one in the same worker.

const nodeProcess = vm.runInThisContext('process') as NodeJS.Process;

describe('TLS ServerName of channels dialled by address', () => {
  const now = new Date();
  let ca: CertificateAuthority;
  let server: RunningGrpcServer;
  const hostA: TlsIdentity = { kind: 'host', hostId: 'host-a' };
  const scheduler: TlsIdentity = { kind: 'control-plane', service: 'scheduler' };

  async function material(identity: TlsIdentity, usages: ('server' | 'client')[]): Promise<TlsMaterial> {
    const keys = generateKeyPair();
    const issued = await ca.issue({ csrPem: await createCertificateRequest(keys.privateKeyPem, 'x'), identity, ipAddresses: ['127.0.0.1'], usages, validForSeconds: 3600, now });
    return { caCertificatePem: ca.certificatePem, certificatePem: issued.certificatePem, privateKeyPem: keys.privateKeyPem };
  }

  beforeAll(async () => {
    ca = await CertificateAuthority.load(await createCertificateAuthority({ now }));
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      credentials: mutualTlsServerCredentials(new RotatingCertificateProvider(await material(hostA, ['server', 'client']))),
      services: [
        {
          definition: schedulerV1.SchedulerServiceService,
          implementation: implementUnary(schedulerV1.SchedulerServiceService, { getWorkload: async (req) => ({ workload: schedulerV1.Workload.fromPartial({ id: req.id }) }) }, silentLogger),
        },
      ],
    });
  });
  afterAll(() => server.stop(100));

  it('sends no IP address as ServerName and draws no DEP0123 warning, for calls and health probes', async () => {
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    const serverNames: unknown[] = [];
    const realConnect = tls.connect;
    const connect = jest.spyOn(tls, 'connect').mockImplementation(((...args: Parameters<typeof tls.connect>) => {
      serverNames.push((args[0] as tls.ConnectionOptions | undefined)?.servername);
      return (realConnect as (...a: unknown[]) => tls.TLSSocket)(...args);
    }) as typeof tls.connect);
    nodeProcess.on('warning', onWarning);
    try {
      const scheduling = await material(scheduler, ['client']);
      const client = createClient(schedulerV1.SchedulerServiceClient, server.address, { deadlineMs: 5000, credentials: mutualTlsChannelCredentials(scheduling, hostA) });
      await expect(client.getWorkload({ id: 'w1', teamId: '' })).resolves.toMatchObject({ workload: { id: 'w1' } });
      client.close();
      await expect(checkHealth(server.address, '', { credentials: mutualTlsProbeCredentials(scheduling) })).resolves.toBe('SERVING');
      await expect(checkHealth(server.address, '', { credentials: serverIdentityChannelCredentials(ca.certificatePem, hostA, scheduling) })).resolves.toBe('SERVING');
      // Warnings are emitted on a later tick.
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      nodeProcess.off('warning', onWarning);
      connect.mockRestore();
    }
    expect(warnings.filter((w) => (w as NodeJS.ErrnoException).code === 'DEP0123' || /ServerName/.test(w.message))).toEqual([]);
    expect(serverNames.length).toBeGreaterThanOrEqual(3);
    expect(serverNames.filter((name) => typeof name === 'string' && isIP(name) !== 0)).toEqual([]);
    expect(new Set(serverNames)).toEqual(new Set([IDENTITY_CHECKED_SERVER_NAME]));
  });

  it('leaves other TLS credentials (a public certificate checked by host name) without the override', async () => {
    expect(tlsChannelOptions(undefined)).toEqual({});
    expect(tlsChannelOptions(credentials.createSsl())).toEqual({});
    expect(tlsChannelOptions(mutualTlsChannelCredentials(await material(scheduler, ['client']), hostA))).toEqual({ 'grpc.ssl_target_name_override': IDENTITY_CHECKED_SERVER_NAME });
  });
});
