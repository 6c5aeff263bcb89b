import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { connectEventBus, CredentialRefusalNotifier, Topics, type EventBus, type EventSubscription } from '@corral/events';
import { implementUnary, RotatingCertificateProvider, serverIdentityChannelCredentials, serverTlsCredentials, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger, type Logger } from '@corral/logging';
import { CertificateAuthority, createCertificateAuthority, issueControlPlaneServerCertificate } from '@corral/pki';
import { hostRegistryV1, InstanceState, type eventsV1, type WorkloadStateChanged } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, eventually, natsUrlOrSkip, type TestDatabase } from '@corral/testing';
import { WorkloadStore } from '../workloads/workload-store';
import { hostRegistryJwks, hostTokenVerifier } from './host-registry-jwks';
import { WorkloadStateAuthenticator } from './workload-state-authenticator';
import { applyWorkloadStateEvents, recordedHostOf } from './workload-state-events';

// Forged state events on a real NATS server against a real database: only
// an event carrying a valid JWT of the host the workload is placed on
// changes the workload. The keys come from a host-registry stand-in that
// serves GetJwks over TLS from a throw-away CA, as the real one does.
const natsUrl = natsUrlOrSkip('authenticated workload state events');

(natsUrl ? describeWithDatabase : describe.skip)('workload state events: authenticated per host', () => {
  const ISSUER = 'corral-host-registry';
  const AUDIENCE = 'corral-control-plane';
  const run = randomBytes(4).toString('hex');
  const hostA = `host-a-${run}`;
  const hostB = `host-b-${run}`;
  const hostC = `host-c-${run}`;
  let notifier: CredentialRefusalNotifier;
  const notices: Record<string, eventsV1.CredentialRefused[]> = { [hostB]: [], [hostC]: [] };
  let db: TestDatabase;
  let registry: RunningGrpcServer;
  let bus: EventBus;
  let subscription: EventSubscription;
  let authenticator: WorkloadStateAuthenticator;
  let store: WorkloadStore;
  let closeJwks: () => void;
  const refusals: string[] = [];
  const logger: Logger = {
    ...silentLogger,
    warn: (message, fields) => {
      if (message === 'workload state event dropped') refusals.push(String(fields?.reason));
    },
    child: () => logger,
  };

  const signing = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const unpublished = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const token = (hostId: string, key: KeyObject = signing.privateKey, kid = 'k1') =>
    jwt.sign({ sub: hostId, typ: 'host', fam: 'f' }, key, { algorithm: 'ES256', keyid: kid, issuer: ISSUER, audience: AUDIENCE, expiresIn: 900 });

  beforeAll(async () => {
    db = await createTestDatabase();
    for (const id of [hostA, hostB, hostC]) await db.prisma.host.create({ data: { id, name: id, status: 'online', agentAddress: '127.0.0.1:1', capacity: {}, drivers: [] } });
    const created = await createCertificateAuthority();
    const ca = await CertificateAuthority.load(created);
    const certificate = await issueControlPlaneServerCertificate(ca, { service: 'host-registry', names: ['127.0.0.1'], validForSeconds: 3600 });
    const jwk = signing.publicKey.export({ format: 'jwk' });
    registry = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      credentials: serverTlsCredentials(new RotatingCertificateProvider(certificate)),
      services: [
        {
          definition: hostRegistryV1.HostRegistryServiceService,
          implementation: implementUnary(
            hostRegistryV1.HostRegistryServiceService,
            {
              getJwks: async () => ({
                issuer: ISSUER,
                audience: AUDIENCE,
                keys: [{ kid: 'k1', kty: 'EC', alg: 'ES256', use: 'sig', crv: String(jwk.crv), x: String(jwk.x), y: String(jwk.y), activatesAt: new Date(0), retiresAt: undefined }],
              }),
            },
            silentLogger,
          ),
        },
      ],
    });
    const jwks = hostRegistryJwks(registry.address, { credentials: serverIdentityChannelCredentials(created.certificatePem, { kind: 'control-plane', service: 'host-registry' }) });
    closeJwks = jwks.close;
    store = new WorkloadStore(db.prisma);
    authenticator = new WorkloadStateAuthenticator({ authenticate: hostTokenVerifier(jwks.fetch), placedOn: recordedHostOf(store), logger });
    bus = await connectEventBus({ url: natsUrl as string, name: 'corral-scheduler-state-auth-test', logger: silentLogger });
    notifier = new CredentialRefusalNotifier({
      bus,
      refusedBy: 'scheduler',
      isKnownHost: async (id) => (await db.prisma.host.count({ where: { id, deletedAt: null } })) > 0,
      logger: silentLogger,
    });
    for (const id of [hostB, hostC]) bus.subscribe(Topics.credentialRefused, (m) => void notices[id].push(m), { key: id });
    subscription = applyWorkloadStateEvents({
      bus,
      workloads: { applyEvent: (id, report) => store.applyAgentReport(id, report, 'event') },
      authenticator,
      refusalNotices: notifier,
      logger,
      queue: `scheduler-test-${run}`,
    });
    await bus.flush();
  });

  afterAll(async () => {
    subscription?.unsubscribe();
    await bus?.close();
    closeJwks?.();
    await registry?.stop(100);
    await db?.drop();
  });

  let workloadCounter = 0;
  async function workloadOn(hostId: string): Promise<string> {
    const id = `w-${run}-${++workloadCounter}`;
    await db.prisma.workload.create({ data: { id, name: id, driver: 'process', hostId, state: 'provisioning' } });
    return id;
  }

  const event = (
    workloadId: string,
    hostId: string,
    seq: number,
    state: InstanceState,
    hostToken: string,
    ports?: WorkloadStateChanged['ports'],
  ): WorkloadStateChanged => ({
    workloadId,
    hostId,
    seq,
    state,
    exited: state === InstanceState.INSTANCE_STATE_FAILED,
    exitCode: state === InstanceState.INSTANCE_STATE_FAILED ? 137 : 0,
    reason: state === InstanceState.INSTANCE_STATE_FAILED ? 'forged' : '',
    at: new Date(),
    hostToken,
    // Without ports, the event is one from an agent that predates them.
    ports: ports ?? [],
    portsReported: ports !== undefined,
  });

  const stored = async (id: string) => {
    const row = await db.prisma.workload.findUniqueOrThrow({ where: { id } });
    return { state: row.state, seq: Number(row.stateSeq), reason: row.reason };
  };

  it('applies an event with the valid token of the host the workload is on', async () => {
    const id = await workloadOn(hostA);
    bus.publish(Topics.workloadState, id, event(id, hostA, 1, InstanceState.INSTANCE_STATE_RUNNING, token(hostA)));
    await eventually(async () => ((await stored(id)).state === 'running' ? true : undefined), { what: 'the genuine event applied' });
  });

  it("stores the ports an event carries with its state: an older answer afterwards changes nothing, an event without ports keeps them, a terminal one clears them", async () => {
    const id = await workloadOn(hostA);
    await db.prisma.workload.update({ where: { id }, data: { routes: [{ name: 'http', port: 8080, protocol: 'tcp' }] } });
    const held = [{ name: 'http', guestPort: 8080, hostPort: 20000, protocol: 'tcp' }];
    const storedPorts = async () => (await db.prisma.workload.findUniqueOrThrow({ where: { id } })).ports;

    // The agent's running event (seq 2) overtakes its StartWorkload answer.
    bus.publish(Topics.workloadState, id, event(id, hostA, 2, InstanceState.INSTANCE_STATE_RUNNING, token(hostA), held));
    await eventually(async () => ((await stored(id)).seq === 2 ? true : undefined), { what: 'the running event applied' });
    expect(await storedPorts()).toEqual(held);

    // The answer arrives late, at its older seq: neither state nor ports move.
    const lateAnswer = { seq: 1, state: 'provisioning' as const, exited: false, exitCode: 0, reason: '', ports: [{ ...held[0], hostPort: 29999 }] };
    expect(await store.applyAgentReport(id, lateAnswer, 'start-response')).toBe(false);
    expect({ ...(await stored(id)), ports: await storedPorts() }).toEqual({ state: 'running', seq: 2, reason: null, ports: held });

    // An agent from before ports on events: its state applies, the ports stay.
    bus.publish(Topics.workloadState, id, event(id, hostA, 3, InstanceState.INSTANCE_STATE_PAUSED, token(hostA)));
    await eventually(async () => ((await stored(id)).seq === 3 ? true : undefined), { what: 'the event without ports applied' });
    expect(await storedPorts()).toEqual(held);

    // Failed for good: nothing holds a port, whatever the event lists.
    bus.publish(Topics.workloadState, id, event(id, hostA, 4, InstanceState.INSTANCE_STATE_FAILED, token(hostA), held));
    await eventually(async () => ((await stored(id)).seq === 4 ? true : undefined), { what: 'the terminal event applied' });
    expect({ state: (await stored(id)).state, ports: await storedPorts() }).toEqual({ state: 'failed', ports: [] });
  });

  it('changes nothing for forged events: no token, garbage, an unpublished key, another host, another host speaking for this one', async () => {
    const id = await workloadOn(hostA);
    refusals.length = 0;
    const refusedBefore = authenticator.refused;
    const forged = [
      event(id, hostA, 10, InstanceState.INSTANCE_STATE_FAILED, ''),
      event(id, hostA, 11, InstanceState.INSTANCE_STATE_FAILED, 'not-a-jwt'),
      event(id, hostA, 12, InstanceState.INSTANCE_STATE_FAILED, token(hostA, unpublished.privateKey, 'k-forged')),
      // host B's genuine token, honest about being host B: the workload is not B's.
      event(id, hostB, 13, InstanceState.INSTANCE_STATE_FAILED, token(hostB)),
      // host B's genuine token, claiming to be host A.
      event(id, hostA, 14, InstanceState.INSTANCE_STATE_FAILED, token(hostB)),
    ];
    for (const e of forged) bus.publish(Topics.workloadState, id, e);
    // Events are handled in order: once this genuine one (a lower seq than
    // every forgery) is applied, each forgery has been handled and refused,
    // or the seq gate would have refused this one.
    bus.publish(Topics.workloadState, id, event(id, hostA, 2, InstanceState.INSTANCE_STATE_RUNNING, token(hostA)));
    await eventually(async () => ((await stored(id)).state === 'running' ? true : undefined), { what: 'the genuine event after the forgeries applied' });
    expect(await stored(id)).toEqual({ state: 'running', seq: 2, reason: null });
    expect(await db.prisma.workloadEvent.count({ where: { workloadId: id, seq: { gte: 10 } } })).toBe(0);
    expect(authenticator.refused - refusedBefore).toBe(forged.length);
    // Logged once per host and reason (the two refused tokens share one line), never the token.
    expect(refusals).toEqual(['no host token', 'host token refused', 'the workload lives on another host', 'host token belongs to another host']);
  });

  it('tells a known host whose event was refused for its token (once per interval), and no host whose valid token was for another workload', async () => {
    const id = await workloadOn(hostC);
    const expired = jwt.sign({ sub: hostC, typ: 'host', fam: 'f', exp: Math.floor(Date.now() / 1000) - 60 }, signing.privateKey, {
      algorithm: 'ES256',
      keyid: 'k1',
      issuer: ISSUER,
      audience: AUDIENCE,
    });
    bus.publish(Topics.workloadState, id, event(id, hostC, 20, InstanceState.INSTANCE_STATE_FAILED, expired));
    bus.publish(Topics.workloadState, id, event(id, hostC, 21, InstanceState.INSTANCE_STATE_FAILED, expired));
    // host B's valid token, honest about being B, for C's workload: not B's token that is wrong.
    bus.publish(Topics.workloadState, id, event(id, hostB, 22, InstanceState.INSTANCE_STATE_FAILED, token(hostB)));
    bus.publish(Topics.workloadState, id, event(id, hostC, 3, InstanceState.INSTANCE_STATE_RUNNING, token(hostC)));
    await eventually(async () => ((await stored(id)).state === 'running' ? true : undefined), { what: 'the genuine event applied' });
    await eventually(() => notices[hostC][0], { what: "host C's notice" });
    await bus.flush();
    expect(notices[hostC]).toEqual([expect.objectContaining({ hostId: hostC, refusedBy: 'scheduler', messageKind: 'REFUSED_MESSAGE_KIND_WORKLOAD_STATE' })]);
    expect(notices[hostB]).toEqual([]);
  });
});
