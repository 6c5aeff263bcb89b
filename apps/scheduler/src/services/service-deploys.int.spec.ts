import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createClient, type PromiseClient } from '@corral/grpc';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { InstanceState, schedulerV1 } from '@corral/proto';
import { createTestDatabase, eventually, natsUrlOrSkip, type TestDatabase } from '@corral/testing';

// Service deploys against the real thing: every service its own process,
// real Postgres and NATS, two process-driver agents (two hosts). A service
// of two components is deployed, rolled to a new version one instance at a
// time behind an HTTP health check, rolled to a version whose health check
// fails (and reverted), undeployed and purged (dry run first). Idempotency-
// Key is exercised through the gateway's REST routes.

const repoRoot = resolve(__dirname, '..', '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const describeSystem = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('service deploy integration skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(300_000);

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- response bodies are asserted field by field
type Json = any;

/** An HTTP server on $PORT that answers its $VERSION, and 500 on /fail. */
const SERVER = "require('http').createServer((q,s)=>{s.statusCode=q.url==='/fail'?500:200;s.end(process.env.VERSION)}).listen(Number(process.env.PORT),'127.0.0.1')";
const IDLE = 'setInterval(()=>{},1000)';

function definition(version: string, options: { healthPath?: string; workerCount?: number; withWorker?: boolean } = {}): string {
  const node = JSON.stringify(process.execPath);
  const worker =
    options.withWorker === false
      ? ''
      : `
[[components]]
name = "worker"
runtime = "process"
command = [${node}, "-e", ${JSON.stringify(IDLE)}]
count = ${options.workerCount ?? 1}
resources = { vcpus = 1, memory_mb = 32 }
`;
  return `name = "shop"

[update]
max_parallel = 1
health_deadline_seconds = 8

[[components]]
name = "api"
runtime = "process"
command = [${node}, "-e", ${JSON.stringify(SERVER)}]
count = 2
env = { VERSION = "${version}" }
resources = { vcpus = 1, memory_mb = 32 }

[[components.routes]]
name = "http"
port = 8080
mode = "l7"

[components.health]
type = "http"
path = "${options.healthPath ?? '/'}"
interval_seconds = 1
timeout_seconds = 1
${worker}`;
}

describeSystem('service deploys', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;
  let scheduler: PromiseClient<schedulerV1.SchedulerServiceClient>;

  const api = async (method: string, path: string, body?: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/toml' } : {}), ...headers },
      body,
    });
    const text = await res.text();
    let json: Json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, headers: res.headers };
  };

  const service = async () => (await scheduler.getService({ teamId: '', name: 'shop' })).service as schedulerV1.Service;
  const rolloutEnded = async () =>
    eventually(
      async () => {
        const s = await service();
        return s.latestDeployment && s.latestDeployment.state !== 'running' ? s : undefined;
      },
      { timeoutMs: 120_000, what: 'the rollout to end' },
    );
  const allRunning = () =>
    eventually(async () => ((await service()).instances.every((i) => i.workload?.state === InstanceState.INSTANCE_STATE_RUNNING) ? true : undefined), {
      timeoutMs: 30_000,
      what: 'every instance running',
    });
  const answer = async (port: number) => (await fetch(`http://127.0.0.1:${port}/`)).text();
  const apiPorts = (s: schedulerV1.Service) =>
    s.instances.filter((i) => i.component === 'api').map((i) => i.workload!.ports.find((p) => p.name === 'http')!.hostPort);

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-services-int-'));
    // Plaintext between the services: what this exercises is deploys, not the control plane's TLS;
    // slower heartbeats, so a busy machine does not make a host look lost in the middle of a rollout.
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, natsUrl, portsMode: 'free', localAgent: true, heartbeatIntervalMs: 2000 });
    adminKey = system.adminKey!;
    const token = await fetch(`${system.gatewayUrl}/v1/hosts/registration-tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ description: 'second host' }),
    }).then(async (r) => ({ status: r.status, json: (await r.json()) as Json }));
    expect(token).toMatchObject({ status: 201 });
    await system.startExtraAgent({ name: 'second', registrationToken: token.json.token });
    const schedulerAddress = system.services.find((s) => s.name === 'scheduler')!.address;
    scheduler = createClient(schedulerV1.SchedulerServiceClient, schedulerAddress, { deadlineMs: 60_000 });
    await eventually(async () => ((await api('GET', '/v1/hosts')).json?.hosts ?? []).filter((h: Json) => h.status === 'online').length === 2 || undefined, {
      timeoutMs: 30_000,
      what: 'two online hosts',
    });
  });

  afterAll(async () => {
    if (system) {
      await api('DELETE', '/v1/services/shop').catch(() => undefined);
      scheduler?.close();
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('plans a new service without recording anything', async () => {
    const plan = await api('POST', '/v1/services/plan', definition('v1'));
    expect(plan.status).toBe(200);
    expect(plan.json).toMatchObject({ service: 'shop', action: 'create', fromVersion: 0 });
    expect(plan.json.components.map((c: Json) => [c.name, c.action, c.countTo])).toEqual([
      ['api', 'create', 2],
      ['worker', 'create', 1],
    ]);
    expect((await api('GET', '/v1/services/shop')).status).toBe(404);
  });

  it('refuses an invalid definition with the path of the problem', async () => {
    const bad = await api('POST', '/v1/services', definition('v1').replace('port = 8080', 'port = 70000'));
    expect(bad.status).toBe(400);
    expect(bad.json.field).toBe('components[0].routes[0].port');
  });

  it('deploys two components across both hosts; the api answers on its allocated ports; a repeated Idempotency-Key replays the answer', async () => {
    const first = await api('POST', '/v1/services', definition('v1'), { 'idempotency-key': 'deploy-v1' });
    expect(first.status).toBe(202);
    expect(first.json.deployment).toMatchObject({ toVersion: 1, state: 'running' });

    const replay = await api('POST', '/v1/services', definition('v1'), { 'idempotency-key': 'deploy-v1' });
    expect(replay.status).toBe(202);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.json.deployment.id).toBe(first.json.deployment.id);
    const reused = await api('POST', '/v1/services', definition('v9'), { 'idempotency-key': 'deploy-v1' });
    expect(reused.status).toBe(422);
    expect(reused.json.field).toBe('Idempotency-Key');

    const s = await rolloutEnded();
    // The reason (and the events) first, so a failure says why.
    expect([s.latestDeployment!.reason, s.latestDeployment!.events.slice(-3)]).toEqual(['', expect.any(Array)]);
    expect(s.latestDeployment).toMatchObject({ state: 'succeeded', toVersion: 1 });
    expect(s).toMatchObject({ currentVersion: 1, state: 'running' });
    // A loaded machine can make a host look silent for a moment (instances missing until its next heartbeat).
    await allRunning();
    expect(s.instances.map((i) => `${i.component}[${i.index}]`).sort()).toEqual(['api[0]', 'api[1]', 'worker[0]']);
    // Spread: the two api instances are on different hosts.
    const apiIds = s.instances.filter((i) => i.component === 'api').map((i) => i.workload!.id);
    const placements = await db.prisma.workloadEvent.findMany({ where: { workloadId: { in: apiIds }, type: 'scheduled' }, orderBy: { createdAt: 'asc' } });
    expect({ hosts: new Set(s.instances.filter((i) => i.component === 'api').map((i) => i.workload!.hostId)).size, why: placements.map((e) => e.message) }).toEqual({
      hosts: 2,
      why: expect.any(Array),
    });
    for (const port of apiPorts(s)) expect(await answer(port)).toBe('v1');

    // The same definition again changes nothing.
    const again = await scheduler.deployService({ teamId: '', definitionToml: definition('v1'), wait: true });
    expect(again.plan?.action).toBe('unchanged');
    expect(again.deployment?.id).toBe(first.json.deployment.id);
  });

  it('rolls a changed env to new instances one at a time, each healthy before its predecessor stops; the worker is kept', async () => {
    const before = await service();
    const workerId = before.instances.find((i) => i.component === 'worker')!.workload!.id;
    const plan = await scheduler.planService({ teamId: '', definitionToml: definition('v2') });
    expect(plan.plan?.components.find((c) => c.name === 'api')).toMatchObject({ action: 'update', replacesInstances: true });
    expect(plan.plan?.components.find((c) => c.name === 'worker')).toMatchObject({ action: 'unchanged' });

    const res = await scheduler.deployService({ teamId: '', definitionToml: definition('v2'), wait: true });
    expect(res.deployment).toMatchObject({ state: 'succeeded', fromVersion: 1, toVersion: 2 });
    const s = await service();
    expect(s.currentVersion).toBe(2);
    expect(s.versions.map((v) => [v.version, v.status])).toEqual([
      [2, 'active'],
      [1, 'superseded'],
    ]);
    const worker = s.instances.find((i) => i.component === 'worker')!;
    expect(worker).toMatchObject({ version: 2 });
    expect(worker.workload!.id).toBe(workerId);
    const ports = apiPorts(s);
    for (const port of ports) expect(await answer(port)).toBe('v2');
    // Rolling, max_parallel 1: each new instance was healthy before its predecessor went.
    const events = s.latestDeployment!.events.map((e) => e.replace(/^\S+ /, ''));
    const firstReplaced = events.findIndex((e) => /^api\[0\]: .* replaced by /.test(e));
    const secondStarted = events.findIndex((e) => /^api\[1\]: started /.test(e));
    const firstHealthy = events.findIndex((e) => /^api\[0\]: .* healthy$/.test(e));
    expect(firstHealthy).toBeGreaterThan(-1);
    expect(firstReplaced).toBeGreaterThan(-1);
    expect(secondStarted).toBeGreaterThan(firstReplaced);
    // The old instances are retired.
    const retired = await db.prisma.workload.count({ where: { serviceId: s.id, componentName: 'api', serviceVersion: 1, state: 'retired' } });
    expect(retired).toBe(2);
  });

  it('reverts a version whose health check fails: the failed version is marked reverted, v2 keeps serving', async () => {
    const res = await scheduler.deployService({ teamId: '', definitionToml: definition('v3', { healthPath: '/fail' }), wait: true });
    expect(res.deployment).toMatchObject({ state: 'reverted', toVersion: 3 });
    expect(res.deployment!.reason).toMatch(/api\[0\]: .* not healthy within 8s \(http http \/fail\)/);
    const s = await service();
    expect(s.currentVersion).toBe(2);
    expect(s.versions.find((v) => v.version === 3)?.status).toBe('reverted');
    expect(s.instances.every((i) => i.version === 2)).toBe(true);
    for (const port of apiPorts(s)) expect(await answer(port)).toBe('v2');
    // The failed instance did not stay behind.
    expect(await db.prisma.workload.count({ where: { serviceId: s.id, serviceVersion: 3, state: { not: 'retired' } } })).toBe(0);
  });

  it('refuses a deploy that references secrets while secrets-broker has no API', async () => {
    const withSecret = definition('v4').replace('env = { VERSION = "v4" }', 'env = { VERSION = "v4" }\nsecrets = ["DB_PASSWORD"]');
    const refused = await api('POST', '/v1/services', withSecret);
    expect(refused.status).toBe(409);
    expect(refused.json).toMatchObject({ error: 'failed_precondition', field: 'service' });
    expect(refused.json.message).toMatch(/secrets-broker not available/);
    expect((await service()).versions).toHaveLength(3);
  });

  it('purges a removed component only once it is gone; the service goes with its last component', async () => {
    // v4 drops the worker: the rollout removes its instance.
    const res = await scheduler.deployService({ teamId: '', definitionToml: definition('v2', { withWorker: false }), wait: true });
    expect(res.deployment?.state).toBe('succeeded');
    const dry = await api('POST', '/v1/services/shop/purge?dry_run=true');
    expect(dry.status).toBe(200);
    expect(dry.json).toMatchObject({ dryRun: true, serviceDeleted: false });
    expect(dry.json.purged.map((p: Json) => p.name)).toEqual(['worker']);
    expect(dry.json.refused).toEqual([expect.objectContaining({ name: 'api', reason: expect.stringContaining('current definition') })]);
    expect((await service()).components.map((c) => c.name)).toEqual(['api', 'worker']);

    const purged = await api('POST', '/v1/services/shop/purge');
    expect(purged.json.purged.map((p: Json) => p.name)).toEqual(['worker']);
    expect((await service()).components.map((c) => c.name)).toEqual(['api']);

    const removed = await api('DELETE', '/v1/services/shop', undefined, { 'idempotency-key': 'rm-1' });
    expect(removed.status).toBe(200);
    expect(removed.json.state).toBe('removed');
    expect(removed.json.instances).toEqual([]);
    const finalDry = await api('POST', '/v1/services/shop/purge?dry_run=true');
    expect(finalDry.json).toMatchObject({ purged: [expect.objectContaining({ name: 'api' })], serviceDeleted: true });
    expect((await api('GET', '/v1/services/shop')).status).toBe(200);
    const final = await api('POST', '/v1/services/shop/purge');
    expect(final.json.serviceDeleted).toBe(true);
    expect((await api('GET', '/v1/services/shop')).status).toBe(404);
    expect(await db.prisma.workload.count({ where: { componentName: { in: ['api', 'worker'] }, state: { not: 'retired' } } })).toBe(0);
  });
});
