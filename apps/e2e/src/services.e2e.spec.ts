import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createExecutor, execErrorFromResult, type Executor } from '@corral/exec';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { silentLogger } from '@corral/logging';
import { createTestDatabase, eventually, natsUrlOrSkip, type TestDatabase } from '@corral/testing';

// A two-component TOML service with routes, through the CLI, onto two
// hosts (process-driver agents): deployed, served on its allocated host
// ports, rolled to a new version one instance at a time (the new version
// answers), healed by the reconciler after an instance is killed behind
// Corral's back, then removed and purged until nothing of it is left.

const repoRoot = resolve(__dirname, '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const describeE2e = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('services e2e skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(300_000);

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- CLI JSON is asserted field by field
type Json = any;

/** Answers "<VERSION> <pid>" on $PORT_HTTP; the admin route answers on $PORT_ADMIN. */
const WEB = [
  "const http=require('http');",
  "http.createServer((q,s)=>s.end(process.env.VERSION+' '+process.pid)).listen(Number(process.env.PORT_HTTP),'127.0.0.1');",
  "http.createServer((q,s)=>s.end('admin')).listen(Number(process.env.PORT_ADMIN),'127.0.0.1');",
].join('');
const QUEUE = "require('net').createServer((c)=>c.end('queue\\n')).listen(Number(process.env.PORT),'127.0.0.1')";

const serviceFile = (version: string) => `name = "storefront"
description = "e2e: web + queue"

[update]
max_parallel = 1
health_deadline_seconds = 20

[[components]]
name = "web"
runtime = "process"
command = [${JSON.stringify(process.execPath)}, "-e", ${JSON.stringify(WEB)}]
count = 2
env = { VERSION = "${version}" }
resources = { vcpus = 1, memory_mb = 32 }
restart = { policy = "on-failure", max_attempts = 3, delay_seconds = 0 }

[[components.routes]]
name = "http"
port = 8080
mode = "l7"

[[components.routes]]
name = "admin"
port = 9090

[components.health]
type = "http"
port = "http"
path = "/"
interval_seconds = 1
timeout_seconds = 1

[[components]]
name = "queue"
runtime = "process"
command = [${JSON.stringify(process.execPath)}, "-e", ${JSON.stringify(QUEUE)}]
ports = [5672]
resources = { vcpus = 1, memory_mb = 32 }

[components.health]
type = "tcp"
interval_seconds = 1
timeout_seconds = 1
`;

describeE2e('service deploys end to end', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;
  let cli: Executor;

  const corral = async (args: string[]): Promise<{ stdout: string }> =>
    cli.run({
      program: process.execPath,
      args: ['--import', 'tsx', join(repoRoot, 'apps/cli/src/main.ts'), ...args],
      env: { CORRAL_ADDR: system.gatewayGrpcAddress, CORRAL_API_KEY: adminKey, TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json') },
      cwd: repoRoot,
      timeoutMs: 180_000,
      parse: (stdout) => ({ stdout }),
      mapError: execErrorFromResult,
    });
  const corralJson = async (args: string[]): Promise<Json> => JSON.parse((await corral(['--output', 'json', ...args])).stdout);
  const get = async (port: number) => (await fetch(`http://127.0.0.1:${port}/`)).text();
  const portOf = (instance: Json, route: string) => instance.ports.find((p: Json) => p.name === route).hostPort as number;
  const webOf = (status: Json) => status.instances.filter((i: Json) => i.component === 'web');
  // A loaded machine can make a host look silent for a moment (its instances missing until its next heartbeat).
  const allRunning = () =>
    eventually(
      async () => {
        const status = await corralJson(['service', 'status', 'storefront']);
        return status.instances.every((i: Json) => i.state === 'running') ? status : undefined;
      },
      { timeoutMs: 30_000, what: 'every instance running' },
    );

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-services-e2e-'));
    system = await startSystem({
      repoRoot,
      dataDir,
      databaseUrl: db.url,
      natsUrl,
      portsMode: 'free',
      localAgent: true,
      // Slower heartbeats: a busy machine must not make a host look lost in the middle of a rollout.
      heartbeatIntervalMs: 2000,
      reconcilerEnv: { RECONCILE_INTERVAL_MS: '500', RECONCILE_INTENT_GRACE_MS: '2000', RECONCILE_PROVISIONING_TIMEOUT_MS: '10000' },
    });
    adminKey = system.adminKey!;
    cli = createExecutor({ allowedPrograms: [process.execPath], logger: silentLogger });
    const token = JSON.parse((await corral(['--output', 'json', 'token', 'create', '--description', 'second host'])).stdout);
    await system.startExtraAgent({ name: 'second', registrationToken: token.token });
    await eventually(async () => ((await corralJson(['hosts', 'list'])).hosts ?? []).filter((h: Json) => h.status === 'online').length === 2 || undefined, {
      timeoutMs: 60_000,
      what: 'two online hosts',
    });
  });

  afterAll(async () => {
    if (system) {
      await corral(['service', 'rm', 'storefront']).catch(() => undefined);
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  const file = (version: string) => {
    const path = join(dataDir, `storefront-${version}.toml`);
    writeFileSync(path, serviceFile(version));
    return path;
  };

  let webHosts: Set<string>;

  it('plans, then deploys with --wait onto both hosts; every route answers on its allocated host port', async () => {
    const plan = await corral(['service', 'plan', file('v1')]);
    expect(plan.stdout).toContain('service storefront: create');
    expect(plan.stdout).toContain('+ web: create 2 instances');
    expect(plan.stdout).toContain('Plan: 2 to create');

    const deployed = await corralJson(['service', 'deploy', '--wait', file('v1')]);
    expect(deployed).toMatchObject({ name: 'storefront', state: 'running', currentVersion: 1, latestDeployment: { state: 'succeeded' } });
    const running = await allRunning();
    const web = webOf(running);
    expect(web).toHaveLength(2);
    webHosts = new Set(web.map((i: Json) => i.hostId));
    // Spread across both hosts; the placement reasons say why if not.
    const why = (await db.prisma.workloadEvent.findMany({ where: { workloadId: { in: web.map((i: Json) => i.workloadId) }, type: 'scheduled' } })).map((e) => e.message);
    expect({ hosts: webHosts.size, why }).toEqual({ hosts: 2, why: expect.any(Array) });
    for (const i of web) {
      expect(await get(portOf(i, 'http'))).toMatch(/^v1 \d+$/);
      expect(await get(portOf(i, 'admin'))).toBe('admin');
    }
    const queue = running.instances.find((i: Json) => i.component === 'queue');
    expect(queue.ports).toEqual([expect.objectContaining({ name: 'port-5672', guestPort: 5672 })]);

    const listed = await corralJson(['service', 'list']);
    expect(listed.services.map((s: Json) => [s.name, s.state])).toEqual([['storefront', 'running']]);
  });

  it('rolls out a new version one instance at a time; the new version answers and the old instances are gone', async () => {
    const plan = await corral(['service', 'plan', file('v2')]);
    expect(plan.stdout).toContain('~ web: update, replaces 2 instances, 1 at a time');
    expect(plan.stdout).toContain('~ env.VERSION: "v1" → "v2"');
    expect(plan.stdout).toContain('queue: unchanged');

    const before = await corralJson(['service', 'status', 'storefront']);
    const oldWeb = webOf(before).map((i: Json) => i.workloadId);
    const queueId = before.instances.find((i: Json) => i.component === 'queue').workloadId;

    const deployed = await corralJson(['service', 'deploy', '--wait', file('v2')]);
    expect(deployed).toMatchObject({ currentVersion: 2, latestDeployment: { state: 'succeeded', fromVersion: 1, toVersion: 2 } });
    const web = webOf(deployed);
    expect(web).toHaveLength(2);
    expect(web.map((i: Json) => i.workloadId).filter((id: string) => oldWeb.includes(id))).toEqual([]);
    for (const i of web) expect(await get(portOf(i, 'http'))).toMatch(/^v2 \d+$/);
    // The unchanged component kept its instance.
    expect(deployed.instances.find((i: Json) => i.component === 'queue').workloadId).toBe(queueId);
    const events: string[] = deployed.latestDeployment.events;
    const replacedFirst = events.findIndex((e) => e.includes('web[0]:') && e.includes('replaced by'));
    const startedSecond = events.findIndex((e) => e.includes('web[1]: started'));
    expect(replacedFirst).toBeGreaterThan(-1);
    expect(startedSecond).toBeGreaterThan(replacedFirst);
  });

  it('heals an instance killed behind its back (the reconciler restarts it per its restart policy)', async () => {
    const [victim] = webOf(await allRunning());
    const [, pid] = (await get(portOf(victim, 'http'))).split(' ');
    process.kill(Number(pid), 'SIGKILL');
    const healed = await eventually(
      async () => {
        const now = await corralJson(['service', 'status', 'storefront']);
        const same = webOf(now).find((i: Json) => i.index === victim.index && i.state === 'running');
        if (!same) return undefined;
        const answer = await get(portOf(same, 'http')).catch(() => '');
        return answer.startsWith('v2 ') && answer !== `v2 ${pid}` ? answer : undefined;
      },
      { timeoutMs: 90_000, what: 'the killed instance to serve again' },
    );
    expect(healed).toMatch(/^v2 \d+$/);
  });

  it('removes the service, then purges it (dry run first) until nothing is left', async () => {
    const removed = await corralJson(['service', 'rm', 'storefront']);
    expect(removed).toMatchObject({ state: 'removed', instances: [] });

    const dry = await corral(['service', 'purge', '--dry-run', 'storefront']);
    expect(dry.stdout).toContain('would purge queue');
    expect(dry.stdout).toContain('would purge web');
    expect(dry.stdout).toContain('would delete service storefront');
    expect((await corralJson(['service', 'status', 'storefront'])).name).toBe('storefront');

    const purged = await corralJson(['service', 'purge', 'storefront']);
    expect(purged).toMatchObject({ dryRun: false, serviceDeleted: true, refused: [] });
    expect(purged.purged.map((p: Json) => p.name).sort()).toEqual(['queue', 'web']);
    await expect(corral(['service', 'status', 'storefront'])).rejects.toMatchObject({ exitCode: 1 });
    const live = await db.prisma.workload.count({ where: { componentName: { in: ['web', 'queue'] }, state: { not: 'retired' } } });
    expect(live).toBe(0);
  });
});
