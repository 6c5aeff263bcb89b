import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createExecutor, execErrorFromResult, type Executor } from '@corral/exec';
import { startSystem, type ExtraAgent, type RunningSystem } from '@corral/launcher';
import { silentLogger } from '@corral/logging';
import { createTestDatabase, eventually, natsUrlOrSkip, type TestDatabase } from '@corral/testing';

// Drain that moves workloads away, with every hop real (each service its own
// process, real Postgres and NATS, two process-driver agents): a workload
// runs on host A; `corral hosts drain A --migrate` places a replacement with
// the same spec on host B, waits for it to run, then stops and tears down
// the original; A is left with nothing live. Draining again with migrate
// (REST) finds nothing to move and creates no second replacement.

const repoRoot = resolve(__dirname, '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const describeE2e = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('drain e2e skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(240_000);

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- response bodies are asserted field by field
type Json = any;

describeE2e('drain with migrate end to end', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;
  let cli: Executor;
  let hostA: ExtraAgent;
  let hostB: ExtraAgent;

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: Json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text };
  };

  const corral = (args: string[]) =>
    cli.run({
      program: process.execPath,
      args: ['--import', 'tsx', join(repoRoot, 'apps/cli/src/main.ts'), ...args],
      env: { CORRAL_ADDR: system.gatewayGrpcAddress, CORRAL_API_KEY: adminKey, TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json') },
      cwd: repoRoot,
      timeoutMs: 120_000,
      parse: (stdout) => stdout,
      mapError: execErrorFromResult,
    });

  const waitFor = (what: string, probe: () => Promise<Json>) => eventually(probe, { timeoutMs: 60_000, what });
  const hostStatus = (id: string, status: string) =>
    waitFor(`host ${id} to be ${status}`, async () => {
      const { json } = await api('GET', `/v1/hosts/${id}`);
      return json?.status === status ? json : undefined;
    });
  const workloadState = (id: string, states: string[]) =>
    waitFor(`workload ${id} to reach ${states.join('/')}`, async () => {
      const { json } = await api('GET', `/v1/workloads/${id}`);
      return states.includes(json?.state) ? json : undefined;
    });
  const agent = async (name: string) => {
    const token = await api('POST', '/v1/hosts/registration-tokens', { description: `drain e2e ${name}` });
    expect(token.status).toBe(201);
    const started = await system.startExtraAgent({ name, registrationToken: token.json.token });
    await hostStatus(started.hostId, 'online');
    return started;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-drain-e2e-'));
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, natsUrl, portsMode: 'free', localAgent: false, logLevel: 'debug' });
    adminKey = system.adminKey ?? '';
    cli = createExecutor({ allowedPrograms: [process.execPath], logger: silentLogger });
  });

  afterAll(async () => {
    if (system) {
      // Nothing of ours may outlive the test: tear down what is still there.
      const { json } = await api('GET', '/v1/workloads').catch(() => ({ json: undefined }));
      for (const w of json?.workloads ?? []) if (w.state !== 'retired') await api('DELETE', `/v1/workloads/${w.id}`).catch(() => undefined);
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('moves a running workload from the drained host to another: replacement running there first, then the original retired', async () => {
    // A alone first, so round-robin has only A to put the workload on.
    hostA = await agent('drain-a');
    const created = await api('POST', '/v1/workloads', { name: 'mover', driver: 'process', command: ['/bin/sleep', '300'], env: { GREETING: 'hi' }, resources: { vcpus: 1, memoryMb: 32 } });
    expect(created.status).toBe(201);
    const original = await workloadState(created.json.id, ['running']);
    expect(original.hostId).toBe(hostA.hostId);
    hostB = await agent('drain-b');

    const drained = JSON.parse(await corral(['--output', 'json', 'hosts', 'drain', hostA.hostId, '--migrate', '--max-parallel', '2']));
    expect(drained).toMatchObject({ id: hostA.hostId, status: 'draining' });
    expect(drained.migrations).toEqual([
      { workloadId: original.id, name: 'mover', outcome: 'moved', replacementId: expect.any(String), toHostId: hostB.hostId, reason: expect.stringContaining('running') },
    ]);
    const replacementId: string = drained.migrations[0].replacementId;

    // The replacement runs on B with the same spec; the original is retired.
    const replacement = (await api('GET', `/v1/workloads/${replacementId}`)).json;
    expect(replacement).toMatchObject({ state: 'running', hostId: hostB.hostId, name: 'mover', command: ['/bin/sleep', '300'], envKeys: ['GREETING'], resources: { vcpus: 1, memoryMb: 32 } });
    expect((await api('GET', `/v1/workloads/${original.id}`)).json.state).toBe('retired');
    // A has nothing live.
    const onA = ((await api('GET', '/v1/workloads')).json.workloads as Json[]).filter((w) => w.hostId === hostA.hostId && !['stopped', 'failed', 'retired'].includes(w.state));
    expect(onA).toEqual([]);

    // The record says why the replacement exists, and the original links to it.
    const scheduled = await db.prisma.workloadEvent.findFirstOrThrow({ where: { workloadId: replacementId, type: 'scheduled' } });
    expect(scheduled.message).toContain(`replaces ${original.id} from draining host`);
    const link = await db.prisma.workloadEvent.findFirstOrThrow({ where: { workloadId: original.id, type: 'replaced-by' } });
    expect(link.data).toEqual({ replacementId });
    // The replacement started before the original began to stop.
    const replacementRunning = await db.prisma.workloadEvent.findFirstOrThrow({ where: { workloadId: replacementId, state: 'running' }, orderBy: { createdAt: 'asc' } });
    const originalStopping = await db.prisma.workloadEvent.findFirstOrThrow({ where: { workloadId: original.id, state: 'stopping' }, orderBy: { createdAt: 'asc' } });
    expect(replacementRunning.createdAt.getTime()).toBeLessThanOrEqual(originalStopping.createdAt.getTime());
  });

  it('is idempotent: draining again with migrate moves nothing and makes no second replacement', async () => {
    const before = (await api('GET', '/v1/workloads')).json.workloads.length;
    const again = await api('POST', `/v1/hosts/${hostA.hostId}/drain?migrate=true`);
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ id: hostA.hostId, status: 'draining', migrations: [] });
    expect((await api('GET', '/v1/workloads')).json.workloads.length).toBe(before);
  });

  it('reports a workload it cannot move, leaving the original running, with the placement reason', async () => {
    // Undrain A, put a workload there that no other host can take, drain A again.
    expect((await api('POST', `/v1/hosts/${hostA.hostId}/undrain`)).status).toBe(200);
    await api('POST', `/v1/hosts/${hostB.hostId}/drain`);
    const created = await api('POST', '/v1/workloads', { name: 'stuck', driver: 'process', command: ['/bin/sleep', '300'] });
    expect(created.status).toBe(201);
    await workloadState(created.json.id, ['running']);
    const res = await api('POST', `/v1/hosts/${hostA.hostId}/drain?migrate=true`);
    expect(res.status).toBe(200);
    expect(res.json.migrations).toEqual([
      expect.objectContaining({ workloadId: created.json.id, outcome: 'failed', replacementId: null, reason: expect.stringMatching(/^no replacement: no online host can run driver "process"/) }),
    ]);
    expect((await api('GET', `/v1/workloads/${created.json.id}`)).json).toMatchObject({ state: 'running', hostId: hostA.hostId });
  });
});
