import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawnSupervised, type SupervisedProcess } from '@corral/exec';
import { checkHealth, createClient, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { hostRegistryV1 } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, freePort, natsUrlOrSkip, type TestDatabase } from '@corral/testing';
import { ensureIdentity, identityPath } from '../identity/identity';
import { CredentialRefresher, type RefresherClock } from './credential-refresher';

// Against the REAL host-registry, run as its own process (one app may not
// import another) on a throw-away database: register, refresh twice, and
// check what the registry and the identity file say afterwards.

const REPO_ROOT = resolve(__dirname, '../../../..');
const natsUrl = natsUrlOrSkip('agent credential refresh against host-registry');
const describeIfNats = natsUrl ? describeWithDatabase : describe.skip;

describeIfNats('agent credential refresh against the real host-registry', () => {
  let db: TestDatabase;
  let registry: SupervisedProcess | undefined;
  let client: PromiseClient<hostRegistryV1.HostRegistryServiceClient>;
  let stateDir: string;
  let address: string;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-refresh-'));
    db = await createTestDatabase();
    const port = await freePort();
    address = `127.0.0.1:${port}`;
    registry = await spawnSupervised({
      program: process.execPath,
      args: ['--import', 'tsx', join(REPO_ROOT, 'apps', 'host-registry', 'src', 'main.ts')],
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? tmpdir(),
        DATABASE_URL: db.url,
        NATS_URL: natsUrl ?? '',
        HOST_KEY_ENCRYPTION_KEY: 'k'.repeat(32),
        HOST_REGISTRY_GRPC_HOST: '127.0.0.1',
        HOST_REGISTRY_GRPC_PORT: String(port),
        HOST_TOKEN_TTL_SECONDS: '60',
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
  }, 90_000);

  afterAll(async () => {
    client?.close();
    if (registry) {
      registry.kill('SIGTERM');
      await registry.wait();
    }
    await db?.drop();
    rmSync(stateDir, { recursive: true, force: true });
  }, 30_000);

  it('registers, refreshes twice keeping the newest pair on disk, and the first refresh token is refused afterwards', async () => {
    const created = await client.createRegistrationToken({ ttlSeconds: 0, teamId: '', description: 'refresh test', scope: undefined });
    const { identity } = await ensureIdentity({
      stateDir,
      registrationToken: created.token,
      name: 'refreshing-agent',
      agentAddress: '127.0.0.1:50060',
      describeHost: async () => ({ capacity: { cpuMillis: 1000, memoryMb: 512, diskMb: 1024 }, drivers: [] }),
      register: (request) => client.registerHost(request),
      logger: silentLogger,
    });
    const firstRefreshToken = identity.refreshToken ?? '';
    expect(firstRefreshToken).toMatch(/^crr_/);

    // Real registry, agent-side time driven by hand: each timer fires when the test says.
    const timers: Array<() => void> = [];
    const clock: RefresherClock = {
      now: () => Date.now(),
      setTimeout: (fn) => timers.push(fn),
      clearTimeout: () => undefined,
    };
    const refresher = new CredentialRefresher({ stateDir, identity, refresh: (request) => client.refreshHostCredentials(request), logger: silentLogger, clock });
    refresher.start();
    const seen = [identity];
    for (let i = 0; i < 2; i++) {
      const fire = timers.shift();
      expect(fire).toBeDefined();
      fire?.();
      await refresher.idle();
      seen.push(refresher.identity);
    }
    await refresher.stop();

    const tokens = seen.map((s) => s.refreshToken);
    expect(new Set(tokens).size).toBe(3);
    expect(seen.map((s) => s.hostId)).toEqual([identity.hostId, identity.hostId, identity.hostId]);
    expect(refresher.status.state).toBe('ok');

    const onDisk = JSON.parse(readFileSync(identityPath(stateDir), 'utf8'));
    expect(onDisk).toMatchObject({ hostId: identity.hostId, hostToken: seen[2].hostToken, refreshToken: seen[2].refreshToken, refreshTokenExpiresAt: seen[2].refreshTokenExpiresAt });

    // The first token was spent and its child used: presenting it again is a reuse.
    await expect(client.refreshHostCredentials({ refreshToken: firstRefreshToken })).rejects.toMatchObject({ name: 'UnauthenticatedError' });
  }, 60_000);
});
