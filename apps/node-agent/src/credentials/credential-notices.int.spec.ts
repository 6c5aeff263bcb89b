import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connectEventBus, Topics, type EventBus } from '@corral/events';
import { spawnSupervised, type SupervisedProcess } from '@corral/exec';
import { checkHealth, createClient, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { hostRegistryV1, type eventsV1 } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, eventually, freePort, natsUrlOrSkip, type TestDatabase } from '@corral/testing';
import { startHeartbeats, type Heartbeater } from '../heartbeat/heartbeater';
import { ensureIdentity } from '../identity/identity';
import { refreshOnCredentialNotices } from './credential-notices';
import { CredentialRefresher, type RefresherClock } from './credential-refresher';

// The REAL host-registry (its own process, one app may not import another)
// on a throw-away database and the real NATS, in a subject namespace of its
// own: an agent heartbeating with a token the registry refuses (its
// signature broken, as for a token signed by a key the registry no longer
// has) is told so on its notices subject, refreshes at once (its scheduled
// refresh never fires here), and its heartbeats are accepted again; once
// the host is deleted, refreshing is refused and the failure policy applies.

const REPO_ROOT = resolve(__dirname, '../../../..');
const natsUrl = natsUrlOrSkip('agent refresh on CredentialRefused from host-registry');
const describeIfNats = natsUrl ? describeWithDatabase : describe.skip;

/** The same token with its signature no longer matching. */
function withBrokenSignature(jwt: string): string {
  const [header, payload, signature] = jwt.split('.');
  const flipped = signature.startsWith('A') ? `B${signature.slice(1)}` : `A${signature.slice(1)}`;
  return [header, payload, flipped].join('.');
}

describeIfNats('agent credential refresh on a refusal notice from the real host-registry', () => {
  const namespace = `notices-${process.pid}-${randomBytes(4).toString('hex')}`;
  let db: TestDatabase;
  let registry: SupervisedProcess | undefined;
  let client: PromiseClient<hostRegistryV1.HostRegistryServiceClient>;
  let stateDir: string;
  let bus: EventBus;
  let observer: EventBus;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-notices-'));
    db = await createTestDatabase();
    const port = await freePort();
    const address = `127.0.0.1:${port}`;
    registry = await spawnSupervised({
      program: process.execPath,
      args: ['--import', 'tsx', join(REPO_ROOT, 'apps', 'host-registry', 'src', 'main.ts')],
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? tmpdir(),
        DATABASE_URL: db.url,
        NATS_URL: natsUrl ?? '',
        NATS_SUBJECT_NAMESPACE: namespace,
        HOST_KEY_ENCRYPTION_KEY: 'k'.repeat(32),
        HOST_REGISTRY_GRPC_HOST: '127.0.0.1',
        HOST_REGISTRY_GRPC_PORT: String(port),
        HEARTBEAT_INTERVAL_MS: '500',
        LOG_LEVEL: 'warn',
      },
      cwd: REPO_ROOT,
      logPath: join(stateDir, 'host-registry.log'),
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      const status = await checkHealth(address, '', { deadlineMs: 1000 }).catch(() => undefined);
      if (status === 'SERVING') break;
      if (Date.now() > deadline) throw new Error(`host-registry did not start: ${readFileSync(join(stateDir, 'host-registry.log'), 'utf8')}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    client = createClient(hostRegistryV1.HostRegistryServiceClient, address, { deadlineMs: 10_000 });
    bus = await connectEventBus({ url: natsUrl as string, name: 'notices-agent', logger: silentLogger, namespace });
    observer = await connectEventBus({ url: natsUrl as string, name: 'notices-observer', logger: silentLogger, namespace });
  }, 90_000);

  afterAll(async () => {
    await bus?.close();
    await observer?.close();
    client?.close();
    if (registry) {
      registry.kill('SIGTERM');
      await registry.wait();
    }
    await db?.drop();
    rmSync(stateDir, { recursive: true, force: true });
  }, 30_000);

  it('tells the agent its heartbeats are refused; the agent refreshes and its heartbeats are accepted again; deleted, its refresh is refused', async () => {
    const created = await client.createRegistrationToken({ ttlSeconds: 0, teamId: '', description: 'notices test', scope: undefined });
    const { identity } = await ensureIdentity({
      stateDir,
      registrationToken: created.token,
      name: 'refused-agent',
      agentAddress: '127.0.0.1:50061',
      describeHost: async () => ({ capacity: { cpuMillis: 1000, memoryMb: 512, diskMb: 1024 }, drivers: [] }),
      register: (request) => client.registerHost(request),
      logger: silentLogger,
    });
    const hostId = identity.hostId;
    const refused = withBrokenSignature(identity.hostToken);

    const notices: eventsV1.CredentialRefused[] = [];
    observer.subscribe(Topics.credentialRefused, (m) => void notices.push(m), { key: hostId });
    await observer.flush();

    // Agent-side time frozen: the scheduled refresh never fires, only the notice can cause one.
    const clock: RefresherClock = { now: () => Date.now(), setTimeout: () => undefined, clearTimeout: () => undefined };
    const refresher = new CredentialRefresher({
      stateDir,
      identity: { ...identity, hostToken: refused },
      refresh: (request) => client.refreshHostCredentials(request),
      logger: silentLogger,
      clock,
      // The deleted-host step below refreshes again at once (host-registry sends one notice per 30 s anyway).
      minOnDemandIntervalMs: 0,
    });
    refresher.start();
    const subscription = refreshOnCredentialNotices({ bus, hostId, refresher, logger: silentLogger });
    await bus.flush();
    const heartbeats: Heartbeater = startHeartbeats({
      bus,
      hostId,
      intervalMs: 200,
      logger: silentLogger,
      hostToken: () => refresher.identity.hostToken,
      collect: async () => ({ capacity: { cpuMillis: 1000, memoryMb: 512, diskMb: 1024 }, usage: undefined, drivers: [], workloads: [], agentAddress: '' }),
    });
    try {
      const notice = await eventually(() => notices[0], { what: 'a CredentialRefused notice', timeoutMs: 20_000 });
      expect(notice).toMatchObject({ hostId, refusedBy: 'host-registry', messageKind: 'REFUSED_MESSAGE_KIND_HEARTBEAT' });
      await eventually(() => (refresher.identity.hostToken !== refused ? true : undefined), { what: 'the refresh the notice caused' });
      expect(refresher.identity.refreshToken).not.toBe(identity.refreshToken);
      expect(refresher.status.state).toBe('ok');

      const accepted = await eventually(
        async () => {
          const { host } = await client.getHost({ id: hostId });
          return host?.lastHeartbeatAt ?? undefined;
        },
        { what: 'a heartbeat accepted with the refreshed token' },
      );
      expect(accepted).toBeInstanceOf(Date);

      // Deleted, the host gets no notice worth acting on: a refresh (here the
      // one a call refused as unauthenticated would ask for) is refused and
      // the failure policy applies.
      await client.deleteHost({ id: hostId, teamId: '', force: true });
      await refresher.refreshNow('test: after the host was deleted');
      expect(refresher.status).toMatchObject({ state: 'failed' });
    } finally {
      await heartbeats.stop();
      subscription.unsubscribe();
      await refresher.stop();
    }
  }, 90_000);
});
