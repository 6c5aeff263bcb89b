import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createClient, type PromiseClient } from '@corral/grpc';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { schedulerV1 } from '@corral/proto';
import { createTestDatabase, eventually, natsUrlOrSkip, type TestDatabase } from '@corral/testing';

// A rollout survives its scheduler: the scheduler process is killed (as a
// crash would) in the middle of a rolling replacement, started again, and the
// restarted replica (two hosts) claims the rollout once its lease ran out and finishes it
// from the recorded state, leaving exactly one instance per slot.

const repoRoot = resolve(__dirname, '..', '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const describeSystem = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('rollout takeover integration skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(300_000);

/** An HTTP server on $PORT that answers its $VERSION. */
const SERVER = "require('http').createServer((q,s)=>{s.end(process.env.VERSION)}).listen(Number(process.env.PORT),'127.0.0.1')";

function definition(version: string): string {
  const node = JSON.stringify(process.execPath);
  return `name = "shop"

[update]
max_parallel = 1
health_deadline_seconds = 20

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
path = "/"
interval_seconds = 1
timeout_seconds = 1
`;
}

/** States in which an instance still holds its slot. */
const HOLDS_SLOT = ['pending', 'provisioning', 'running', 'paused', 'stopping', 'missing', 'stopped'];

describeSystem('service rollout takeover', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let scheduler: PromiseClient<schedulerV1.SchedulerServiceClient>;
  const schedulerAddress = () => system.services.find((s) => s.name === 'scheduler')!.address;
  const service = async () => (await scheduler.getService({ teamId: '', name: 'shop' })).service as schedulerV1.Service;

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-rollout-takeover-int-'));
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, natsUrl, portsMode: 'free', localAgent: true, heartbeatIntervalMs: 2000 });
    // A second host: the replacements need room beside the instances they replace.
    const token = await fetch(`${system.gatewayUrl}/v1/hosts/registration-tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${system.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ description: 'second host' }),
    });
    expect(token.status).toBe(201);
    await system.startExtraAgent({ name: 'second', registrationToken: ((await token.json()) as { token: string }).token });
    scheduler = createClient(schedulerV1.SchedulerServiceClient, schedulerAddress(), { deadlineMs: 60_000 });
    await eventually(async () => ((await db.prisma.host.count({ where: { status: 'online' } })) === 2 ? true : undefined), { timeoutMs: 30_000, what: 'two online hosts' });
  });

  afterAll(async () => {
    if (system) {
      await scheduler?.undeployService({ teamId: '', name: 'shop', timeoutSeconds: 5 }).catch(() => undefined);
      scheduler?.close();
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('finishes a rollout whose scheduler was killed mid-way, on the restarted scheduler, one instance per slot', async () => {
    const first = await scheduler.deployService({ teamId: '', definitionToml: definition('v1'), wait: true });
    expect([first.deployment?.reason, first.deployment?.state]).toEqual(['', 'succeeded']);

    const second = await scheduler.deployService({ teamId: '', definitionToml: definition('v2'), wait: false });
    const deploymentId = second.deployment!.id;
    // Mid-way: the first replacement has started, the rest has not.
    await eventually(
      async () => {
        const row = await db.prisma.deployment.findUniqueOrThrow({ where: { id: deploymentId } });
        return ((row.progress as { events?: string[] }).events ?? []).some((e) => e.includes(': started ')) ? true : undefined;
      },
      { timeoutMs: 60_000, what: 'the first replacement to start' },
    );
    await system.killService('scheduler');
    expect((await db.prisma.deployment.findUniqueOrThrow({ where: { id: deploymentId } })).state).toBe('running');

    await system.startService('scheduler');
    scheduler.close();
    scheduler = createClient(schedulerV1.SchedulerServiceClient, schedulerAddress(), { deadlineMs: 60_000 });

    const ended = await eventually(
      async () => {
        const row = await db.prisma.deployment.findUniqueOrThrow({ where: { id: deploymentId } });
        return row.state !== 'running' ? row : undefined;
      },
      { timeoutMs: 180_000, what: 'the rollout to end on the restarted scheduler' },
    );
    const events = (ended.progress as { events: string[] }).events;
    expect([ended.state, ended.reason, events.some((e) => e.includes('taken over by another scheduler'))]).toEqual(['succeeded', null, true]);
    // The replacement the dead scheduler had started is health-checked again by the one that took over.
    expect(events.filter((e) => e.includes('healthy (started before the takeover)'))).toHaveLength(1);
    expect(await service()).toMatchObject({ currentVersion: 2, state: 'running' });

    // Exactly one instance per slot, all of the new version (retired duplicates are torn down).
    const slots = await eventually(
      async () => {
        const rows = await db.prisma.workload.findMany({ where: { serviceId: second.service!.id, state: { in: HOLDS_SLOT } } });
        return rows.length === 2 ? rows : undefined;
      },
      { timeoutMs: 60_000, what: 'one live instance per slot' },
    );
    expect(slots.map((w) => [w.instanceIndex, w.serviceVersion]).sort()).toEqual([
      [0, 2],
      [1, 2],
    ]);
  });
});
