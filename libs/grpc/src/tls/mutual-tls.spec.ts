import { credentials } from '@grpc/grpc-js';
import { silentLogger } from '@corral/logging';
import { CertificateAuthority, createCertificateAuthority, createCertificateRequest, generateKeyPair, type TlsIdentity } from '@corral/pki';
import { schedulerV1 } from '@corral/proto';
import { createClient } from '../client/client';
import { checkHealth } from '../client/health';
import { implementUnary } from '../server/handlers';
import { startGrpcServer, type RunningGrpcServer } from '../server/server';
import { controlPlaneOnly, mutualTlsChannelCredentials, mutualTlsProbeCredentials, mutualTlsServerCredentials, RotatingCertificateProvider, type TlsMaterial } from './mutual-tls';

// Real TLS over loopback: an "agent" server that only the control plane may
// call, and clients holding every kind of certificate.
describe('mutual TLS between the control plane and agents', () => {
  const now = new Date();
  let ca: CertificateAuthority;
  let caPem: string;
  let server: RunningGrpcServer;
  let provider: RotatingCertificateProvider;

  async function material(authority: CertificateAuthority, identity: TlsIdentity, usages: ('server' | 'client')[]): Promise<TlsMaterial> {
    const keys = generateKeyPair();
    const issued = await authority.issue({ csrPem: await createCertificateRequest(keys.privateKeyPem, 'x'), identity, ipAddresses: ['127.0.0.1'], usages, validForSeconds: 3600, now });
    return { caCertificatePem: authority.certificatePem, certificatePem: issued.certificatePem, privateKeyPem: keys.privateKeyPem };
  }

  const hostA: TlsIdentity = { kind: 'host', hostId: 'host-a' };
  const scheduler: TlsIdentity = { kind: 'control-plane', service: 'scheduler' };

  beforeAll(async () => {
    const created = await createCertificateAuthority({ now });
    caPem = created.certificatePem;
    ca = await CertificateAuthority.load(created);
    provider = new RotatingCertificateProvider(await material(ca, hostA, ['server', 'client']));
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      credentials: mutualTlsServerCredentials(provider),
      interceptors: [controlPlaneOnly()],
      services: [
        {
          definition: schedulerV1.SchedulerServiceService,
          implementation: implementUnary(schedulerV1.SchedulerServiceService, { getWorkload: async (req) => ({ workload: schedulerV1.Workload.fromPartial({ id: req.id }) }) }, silentLogger),
        },
      ],
    });
  });
  afterAll(() => server.stop(100));

  const call = (creds: ReturnType<typeof credentials.createInsecure>) => {
    const client = createClient(schedulerV1.SchedulerServiceClient, server.address, { deadlineMs: 5000, credentials: creds });
    return client.getWorkload({ id: 'w1', teamId: '' }).finally(() => client.close());
  };

  it('lets the control plane call an agent whose certificate names the host it expects', async () => {
    const creds = mutualTlsChannelCredentials(await material(ca, scheduler, ['client']), hostA);
    await expect(call(creds)).resolves.toMatchObject({ workload: { id: 'w1' } });
  });

  it('refuses a host certificate calling another agent, but lets it probe health', async () => {
    const hostB = await material(ca, { kind: 'host', hostId: 'host-b' }, ['server', 'client']);
    await expect(call(mutualTlsChannelCredentials(hostB, hostA))).rejects.toMatchObject({ name: 'PermissionDeniedError' });
    await expect(checkHealth(server.address, '', { credentials: mutualTlsChannelCredentials(hostB, hostA) })).resolves.toBe('SERVING');
  });

  it('refuses clients without a certificate, with one from another CA, and plaintext', async () => {
    await expect(call(credentials.createSsl(Buffer.from(caPem)))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    const otherCa = await CertificateAuthority.load(await createCertificateAuthority({ now }));
    const foreign = await material(otherCa, scheduler, ['client']);
    await expect(call(mutualTlsChannelCredentials({ ...foreign, caCertificatePem: caPem }, hostA))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await expect(call(credentials.createInsecure())).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('refuses an agent whose certificate names a different host than the one dialled', async () => {
    const creds = mutualTlsChannelCredentials(await material(ca, scheduler, ['client']), { kind: 'host', hostId: 'host-z' });
    await expect(call(creds)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('serves a renewed certificate to new connections without a restart', async () => {
    const renewedIdentity: TlsIdentity = { kind: 'host', hostId: 'host-a-renewed' };
    provider.update(await material(ca, renewedIdentity, ['server', 'client']));
    const client = await material(ca, scheduler, ['client']);
    await expect(call(mutualTlsChannelCredentials(client, renewedIdentity))).resolves.toMatchObject({ workload: { id: 'w1' } });
    await expect(call(mutualTlsChannelCredentials(client, hostA))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('drops connections until a provider created without material gets its first certificate', async () => {
    const later = new RotatingCertificateProvider();
    const waiting = await startGrpcServer({ host: '127.0.0.1', port: 0, logger: silentLogger, credentials: mutualTlsServerCredentials(later), services: [] });
    try {
      const probe = mutualTlsProbeCredentials(await material(ca, scheduler, ['client']));
      await expect(checkHealth(waiting.address, '', { deadlineMs: 2000, credentials: probe })).rejects.toThrow();
      expect(later.hasMaterial).toBe(false);
      later.update(await material(ca, { kind: 'host', hostId: 'host-late' }, ['server', 'client']));
      // The probe accepts any host the CA vouches for: it does not yet know which one registered.
      await expect(checkHealth(waiting.address, '', { deadlineMs: 5000, credentials: mutualTlsProbeCredentials(await material(ca, scheduler, ['client'])) })).resolves.toBe('SERVING');
    } finally {
      await waiting.stop(100);
    }
  });
});
