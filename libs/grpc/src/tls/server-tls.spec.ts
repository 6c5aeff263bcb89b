import { credentials } from '@grpc/grpc-js';
import { silentLogger } from '@corral/logging';
import { caCertificatePin, CertificateAuthority, createCertificateAuthority, issueControlPlaneServerCertificate } from '@corral/pki';
import { schedulerV1 } from '@corral/proto';
import { createClient } from '../client/client';
import { implementUnary } from '../server/handlers';
import { startGrpcServer, type RunningGrpcServer } from '../server/server';
import { RotatingCertificateProvider } from './mutual-tls';
import { fetchPresentedRootCertificate, serverIdentityChannelCredentials, serverTlsCredentials } from './server-tls';

// Real TLS over loopback: a control-plane server (as host-registry) with a
// certificate from the CA, called by clients that hold no certificate.
describe('server TLS for a control-plane service', () => {
  let caPem: string;
  let otherCaPem: string;
  let server: RunningGrpcServer;
  const hostRegistry = { kind: 'control-plane', service: 'host-registry' } as const;

  beforeAll(async () => {
    const created = await createCertificateAuthority();
    caPem = created.certificatePem;
    otherCaPem = (await createCertificateAuthority()).certificatePem;
    const ca = await CertificateAuthority.load(created);
    const certificate = await issueControlPlaneServerCertificate(ca, { service: 'host-registry', names: ['127.0.0.1', 'localhost'], validForSeconds: 3600 });
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      credentials: serverTlsCredentials(new RotatingCertificateProvider(certificate)),
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
    const client = createClient(schedulerV1.SchedulerServiceClient, server.address, { deadlineMs: 3000, credentials: creds });
    return client.getWorkload({ id: 'w1', teamId: '' }).finally(() => client.close());
  };

  it('answers a client without a certificate that trusts the CA and expects this service', async () => {
    await expect(call(serverIdentityChannelCredentials(caPem, hostRegistry))).resolves.toMatchObject({ workload: { id: 'w1' } });
  });

  it('is refused by a client expecting another service', async () => {
    await expect(call(serverIdentityChannelCredentials(caPem, { kind: 'control-plane', service: 'scheduler' }))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('is refused by a client trusting another CA', async () => {
    await expect(call(serverIdentityChannelCredentials(otherCaPem, hostRegistry))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('does not answer plaintext', async () => {
    await expect(call(credentials.createInsecure())).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('presents its CA in the handshake, so a pin can be checked before trusting it', async () => {
    const root = await fetchPresentedRootCertificate(server.address);
    expect(caCertificatePin(root)).toBe(caCertificatePin(caPem));
    expect(caCertificatePin(root)).not.toBe(caCertificatePin(otherCaPem));
  });
});
