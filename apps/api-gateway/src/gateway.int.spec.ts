import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueApiKey, revokeApiKey } from '@corral/auth';
import { createClient, implementUnary, Metadata, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1, hostRegistryV1, schedulerV1 } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { loadGatewayConfig } from './config';
import { startGateway, type RunningGateway } from './gateway';
import { FakeHostRegistry, FakeScheduler } from './testing/fake-backends';

// The whole gateway against real Postgres (migrations, API keys, the first
// admin key), with the scheduler and host-registry played by in-memory fakes
// behind real gRPC servers.
describeWithDatabase('api-gateway on Postgres', () => {
  let db: TestDatabase;
  let backends: RunningGrpcServer;
  let scheduler: FakeScheduler;
  let hosts: FakeHostRegistry;
  let dir: string;
  const gateways: RunningGateway[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    dir = mkdtempSync(join(tmpdir(), 'corral-gateway-'));
    scheduler = new FakeScheduler();
    hosts = new FakeHostRegistry();
    backends = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: schedulerV1.SchedulerServiceService,
          implementation: implementUnary(
            schedulerV1.SchedulerServiceService,
            {
              createWorkload: (req) => scheduler.createWorkload(req),
              getWorkload: (req) => scheduler.getWorkload(req),
              listWorkloads: (req) => scheduler.listWorkloads(req),
              stopWorkload: (req) => scheduler.stopWorkload(req),
              getWorkloadLogs: (req) => scheduler.getWorkloadLogs(req),
            },
            silentLogger,
          ),
        },
        {
          definition: hostRegistryV1.HostRegistryServiceService,
          implementation: implementUnary(
            hostRegistryV1.HostRegistryServiceService,
            {
              createRegistrationToken: (req) => hosts.createRegistrationToken(req),
              listHosts: (req) => hosts.listHosts(req),
              getHost: (req) => hosts.getHost(req),
            },
            silentLogger,
          ),
        },
      ],
    });
  });

  afterAll(async () => {
    await Promise.all(gateways.map((g) => g.stop()));
    await backends?.stop();
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function start(keyFile: string, announced: string[] = []): Promise<RunningGateway> {
    const config = loadGatewayConfig({
      DATABASE_URL: db.url,
      GATEWAY_HTTP_PORT: '0',
      GATEWAY_GRPC_PORT: '0',
      SCHEDULER_ADDR: backends.address,
      HOST_REGISTRY_ADDR: backends.address,
      GATEWAY_ADMIN_KEY_FILE: keyFile,
    });
    const gateway = await startGateway(config, { logger: silentLogger, announce: (text) => announced.push(text) });
    gateways.push(gateway);
    return gateway;
  }

  let adminKey: string;
  let first: RunningGateway;

  it('creates the first admin key exactly once when two gateways start together, and shows it once', async () => {
    const announced: string[][] = [[], []];
    const files = [join(dir, 'a.key'), join(dir, 'b.key')];
    const [a, b] = await Promise.all([start(files[0], announced[0]), start(files[1], announced[1])]);
    const withKey = [a, b].filter((g) => g.adminKey);
    expect(withKey).toHaveLength(1);
    adminKey = withKey[0].adminKey ?? '';
    first = withKey[0];
    const index = a.adminKey ? 0 : 1;

    // With a key file the key goes only there: stdout may be a log file.
    expect(announced).toEqual([[], []]);
    expect(readFileSync(files[index], 'utf8').trim()).toBe(adminKey);
    expect(statSync(files[index]).mode & 0o777).toBe(0o600);
    expect(() => statSync(files[1 - index])).toThrow();

    const again = await start(join(dir, 'c.key'));
    expect(again.adminKey).toBeUndefined();
  });

  it('prints the first admin key once in a banner when no key file is configured', async () => {
    const fresh = await createTestDatabase();
    try {
      const printed: string[] = [];
      const config = loadGatewayConfig({ DATABASE_URL: fresh.url, GATEWAY_HTTP_PORT: '0', GATEWAY_GRPC_PORT: '0', SCHEDULER_ADDR: backends.address, HOST_REGISTRY_ADDR: backends.address });
      const gateway = await startGateway(config, { logger: silentLogger, announce: (text) => printed.push(text) });
      await gateway.stop();
      expect(printed).toHaveLength(1);
      expect(printed[0]).toContain(gateway.adminKey);
    } finally {
      await fresh.drop();
    }
  });

  it('scopes team keys to their team over REST and gRPC, and admin keys see everything', async () => {
    const [teamA, teamB] = await Promise.all(['alpha', 'beta'].map((name) => db.prisma.team.create({ data: { name } })));
    const keyA = await issueApiKey(db.prisma, { admin: false, teamId: teamA.id, name: 'a' });
    const keyB = await issueApiKey(db.prisma, { admin: false, teamId: teamB.id, name: 'b' });
    const rest = (key: string, path: string, init: RequestInit = {}) =>
      fetch(`${first.httpUrl}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...init.headers } });

    const created = await rest(keyA.key, '/v1/workloads', {
      method: 'POST',
      body: JSON.stringify({ name: 'web', driver: 'process', command: ['sleep', '60'], env: { TOKEN: 'never-shown' } }),
    });
    expect(created.status).toBe(201);
    const workload = (await created.json()) as { id: string };
    expect(workload).toMatchObject({ teamId: teamA.id, envKeys: ['TOKEN'], state: 'pending' });

    expect(await (await rest(keyA.key, '/v1/whoami')).json()).toEqual({ keyId: keyA.id, admin: false, teamId: teamA.id });
    expect((await rest(keyA.key, `/v1/workloads/${workload.id}`)).status).toBe(200);
    expect((await rest(keyB.key, `/v1/workloads/${workload.id}`)).status).toBe(404);
    expect(await (await rest(keyB.key, '/v1/workloads')).json()).toEqual({ workloads: [] });
    const all = (await (await rest(adminKey, '/v1/workloads')).json()) as { workloads: { id: string }[] };
    expect(all.workloads.map((w) => w.id)).toContain(workload.id);

    const grpc = (key: string) =>
      createClient(apiV1.CorralServiceClient, first.grpcAddress, {
        metadata: () => {
          const md = new Metadata();
          md.set('authorization', `Bearer ${key}`);
          return md;
        },
      });
    const clientA = grpc(keyA.key);
    const clientB = grpc(keyB.key);
    try {
      expect((await clientA.getWorkload({ id: workload.id })).workload?.teamId).toBe(teamA.id);
      await expect(clientB.getWorkload({ id: workload.id })).rejects.toMatchObject({ code: 'NOT_FOUND' });
      expect((await clientB.whoAmI({})).teamId).toBe(teamB.id);

      await revokeApiKey(db.prisma, keyA.id);
      expect((await rest(keyA.key, '/v1/workloads')).status).toBe(401);
      await expect(clientA.listWorkloads({})).rejects.toMatchObject({ code: 'UNAUTHENTICATED', message: 'authentication required' });
    } finally {
      clientA.close();
      clientB.close();
    }
  });

  it('is ready when the database and both backends answer, and serves its API description', async () => {
    const ready = await fetch(`${first.httpUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', checks: { database: 'ok', scheduler: 'ok', hostRegistry: 'ok' } });
    expect(await (await fetch(`${first.httpUrl}/openapi.json`)).json()).toMatchObject({ openapi: '3.1.0' });
  });

  it('stops cleanly, twice', async () => {
    const gateway = await start(join(dir, 'd.key'));
    await Promise.all([gateway.stop(), gateway.stop()]);
    await expect(fetch(`${gateway.httpUrl}/healthz`)).rejects.toThrow();
  });
});
