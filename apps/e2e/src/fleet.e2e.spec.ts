import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { issueApiKey } from '@corral/auth';
import { createExecutor, execErrorFromResult, type Executor } from '@corral/exec';
import { createClient } from '@corral/grpc';
import { startSystem, type ExtraAgent, type RunningSystem } from '@corral/launcher';
import { silentLogger } from '@corral/logging';
import { schedulerV1 } from '@corral/proto';
import { createTestDatabase, eventually, natsUrlOrSkip, type TestDatabase } from '@corral/testing';

// Fleet membership with every hop real (each service its own process, real
// Postgres and NATS, real agents): drain, undrain, delete refused while a
// workload runs (409 naming it), forced delete (the workload stopped, the
// host gone and kept out although its agent still heartbeats), and a team
// bringing its own host (BYOC) with its own registration token. Drain and
// delete are driven through the CLI as well as REST; so is a team managing
// its own host and scoped tokens, and a host whose agent stops and returns.

const repoRoot = resolve(__dirname, '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const describeE2e = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('fleet e2e skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(240_000);

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- response bodies are asserted field by field
type Json = any;

describeE2e('fleet membership end to end', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;
  let cli: Executor;

  const api = async (method: string, path: string, body?: unknown, key: string = adminKey) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
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

  const corral = (args: string[], key: string = adminKey) =>
    cli.run({
      program: process.execPath,
      args: ['--import', 'tsx', join(repoRoot, 'apps/cli/src/main.ts'), ...args],
      env: { CORRAL_ADDR: system.gatewayGrpcAddress, CORRAL_API_KEY: key, TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json') },
      cwd: repoRoot,
      timeoutMs: 60_000,
      parse: (stdout) => stdout,
      mapError: execErrorFromResult,
    });

  const waitForState = (id: string, states: string[], key = adminKey) =>
    eventually(
      async () => {
        const { json } = await api('GET', `/v1/workloads/${id}`, undefined, key);
        return states.includes(json?.state) ? json : undefined;
      },
      { timeoutMs: 60_000, what: `workload ${id} to reach ${states.join('/')}` },
    );

  const waitForHostStatus = (id: string, status: string) =>
    eventually(
      async () => {
        const { json } = await api('GET', `/v1/hosts/${id}`);
        return json?.status === status ? json : undefined;
      },
      { timeoutMs: 30_000, what: `host ${id} to be ${status}` },
    );

  const sleeper = (name: string) => ({ name, driver: 'process', command: ['/bin/sleep', '300'] });
  const fleetHealth = async () => (await api('GET', '/v1/fleet/health')).json;

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-fleet-e2e-'));
    // On the shared NATS_URL: the launcher gives this system a subject namespace of its
    // own, so the host-registries and schedulers of other suites on that server cannot
    // take a share of these hosts' heartbeats and status events.
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, natsUrl, portsMode: 'free', localAgent: false, logLevel: 'debug' });
    expect(system.natsSubjectNamespace).toMatch(/^corral-/);
    adminKey = system.adminKey!;
    cli = createExecutor({ allowedPrograms: [process.execPath], logger: silentLogger });
  });

  afterAll(async () => {
    if (system) {
      // Nothing of ours may outlive the test: stop what is still running.
      const { json } = await api('GET', '/v1/workloads').catch(() => ({ json: undefined }));
      for (const w of json?.workloads ?? []) if (!['stopped', 'failed', 'retired'].includes(w.state)) await api('DELETE', `/v1/workloads/${w.id}`).catch(() => undefined);
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  let hostId: string;
  let workloadId: string;

  it('drains a host through the CLI: a new workload finds no host (the scheduler says no online host can run it); undrain brings it back', async () => {
    const token = await api('POST', '/v1/hosts/registration-tokens', { description: 'fleet e2e platform host' });
    expect(token.status).toBe(201);
    hostId = await system.startAgent({ registrationToken: token.json.token });
    await waitForHostStatus(hostId, 'online');

    const drained = JSON.parse(await corral(['--output', 'json', 'hosts', 'drain', hostId]));
    expect(drained).toMatchObject({ id: hostId, status: 'draining' });
    expect((await api('GET', `/v1/hosts/${hostId}`)).json.status).toBe('draining');
    // Idempotent.
    expect((await api('POST', `/v1/hosts/${hostId}/drain`)).json.status).toBe('draining');

    const refused = await api('POST', '/v1/workloads', sleeper('while-draining'));
    expect(refused.status).toBe(409);
    expect(refused.json).toMatchObject({ error: 'failed_precondition' });
    // The gateway's message is fixed; the scheduler's own answer says why.
    const schedulerAddress = system.services.find((s) => s.name === 'scheduler')!.address;
    const scheduler = createClient(schedulerV1.SchedulerServiceClient, schedulerAddress, { deadlineMs: 10_000 });
    try {
      const direct = await scheduler
        .createWorkload(schedulerV1.CreateWorkloadRequest.fromPartial({ teamId: '', name: 'direct', driver: 'process', command: ['/bin/true'] }))
        .then(() => undefined, (err: Error & { code?: string }) => err);
      expect(direct?.code).toBe('FAILED_PRECONDITION');
      expect(direct?.message).toMatch(/no online host can run driver "process" \(1 hosts: 1 not online\)/);
    } finally {
      scheduler.close();
    }

    const undrained = await api('POST', `/v1/hosts/${hostId}/undrain`);
    expect(undrained.status).toBe(200);
    expect(undrained.json.status).toBe('online');
    const created = await api('POST', '/v1/workloads', sleeper('after-undrain'));
    expect(created.status).toBe(201);
    workloadId = created.json.id;
    expect((await waitForState(workloadId, ['running'])).hostId).toBe(hostId);
  });

  it('refuses to delete a host with a running workload (409 naming it, over REST and the CLI)', async () => {
    const refused = await api('DELETE', `/v1/hosts/${hostId}`);
    expect(refused.status).toBe(409);
    expect(refused.json).toMatchObject({ error: 'failed_precondition', affectedWorkloads: [workloadId] });
    expect(refused.json.message).toContain(workloadId);

    await expect(corral(['hosts', 'delete', hostId])).rejects.toMatchObject({ exitCode: 1, stderrTail: expect.stringContaining(workloadId) });
    expect((await api('GET', `/v1/hosts/${hostId}`)).json.status).toBe('online');
    expect((await api('GET', `/v1/workloads/${workloadId}`)).json.state).toBe('running');
  });

  it('force-deletes through the CLI: the workload is stopped and the host is gone', async () => {
    const deleted = JSON.parse(await corral(['--output', 'json', 'hosts', 'delete', hostId, '--force']));
    expect(deleted).toMatchObject({ id: hostId, deletedNow: true, stoppedWorkloads: [workloadId], unreachableWorkloads: [] });
    const stopped = await waitForState(workloadId, ['stopped', 'failed']);
    expect(stopped.state).toBe('stopped');

    const listed = await api('GET', '/v1/hosts');
    expect(listed.json.hosts.map((h: { id: string }) => h.id)).not.toContain(hostId);
    expect((await api('GET', `/v1/hosts/${hostId}`)).status).toBe(404);
    const row = await db.prisma.host.findUniqueOrThrow({ where: { id: hostId } });
    expect(row.deletedAt).not.toBeNull();
    expect(row.status).toBe('down');
    // Deleting again is safe and says it was already done.
    const again = await api('DELETE', `/v1/hosts/${hostId}?force=true`);
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ id: hostId, deletedNow: false });
  });

  it('keeps the deleted host out although its agent still heartbeats', async () => {
    // Its agent is still running and publishing; it is the only agent now, so
    // every heartbeat host-registry takes in is its. Wait for several to be
    // refused (a refused heartbeat counts as dropped), twice over so no
    // write that began before the delete is in the window.
    const waitForDropped = async (atLeast: number) =>
      eventually(async () => {
        const h = await fleetHealth();
        return h?.heartbeats?.dropped >= atLeast ? h : undefined;
      }, { timeoutMs: 60_000, what: `${atLeast} dropped heartbeats` });
    const first = await waitForDropped((await fleetHealth()).heartbeats.dropped + 2);
    const before = await db.prisma.host.findUniqueOrThrow({ where: { id: hostId } });
    const second = await waitForDropped(first.heartbeats.dropped + 3);
    expect(second.heartbeats.applied).toBe(first.heartbeats.applied);
    expect(second.heartbeats.received).toBeGreaterThanOrEqual(first.heartbeats.received + 3);
    const after = await db.prisma.host.findUniqueOrThrow({ where: { id: hostId } });
    expect(after).toMatchObject({ status: 'down', lastHeartbeatAt: before.lastHeartbeatAt });
    expect(after.deletedAt).not.toBeNull();
    expect((await api('GET', '/v1/hosts')).json.hosts.map((h: { id: string }) => h.id)).not.toContain(hostId);
    expect(second.hostsByStatus.online ?? 0).toBe(0);
  });

  describe('bring your own host', () => {
    let teamA: { id: string; key: string };
    let teamB: { id: string; key: string };
    let byoc: ExtraAgent;
    let platform: ExtraAgent;
    let byocTokenId: string;

    beforeAll(async () => {
      const team = async (name: string) => {
        const row = await db.prisma.team.create({ data: { name } });
        return { id: row.id, key: (await issueApiKey(db.prisma, { admin: false, teamId: row.id, name: `${name} key` })).key };
      };
      [teamA, teamB] = await Promise.all([team('fleet-alpha'), team('fleet-beta')]);
    });

    it("registers a host with a team's token as that team's host; only that team sees and manages it", async () => {
      const token = await api('POST', '/v1/hosts/registration-tokens', { description: 'alpha rack' }, teamA.key);
      expect(token.status).toBe(201);
      byocTokenId = token.json.id;
      byoc = await system.startExtraAgent({ name: 'byoc-alpha', registrationToken: token.json.token });
      expect((await waitForHostStatus(byoc.hostId, 'online')).teamId).toBe(teamA.id);

      const platformToken = await api('POST', '/v1/hosts/registration-tokens', { description: 'second platform host' });
      platform = await system.startExtraAgent({ name: 'platform-two', registrationToken: platformToken.json.token });
      expect((await waitForHostStatus(platform.hostId, 'online')).teamId).toBeNull();

      const seenBy = async (key: string) => ((await api('GET', '/v1/hosts', undefined, key)).json.hosts as { id: string }[]).map((h) => h.id);
      expect(await seenBy(teamA.key)).toEqual(expect.arrayContaining([byoc.hostId, platform.hostId]));
      expect(await seenBy(teamB.key)).toEqual([platform.hostId]);
      expect((await api('GET', `/v1/hosts/${byoc.hostId}`, undefined, teamB.key)).status).toBe(404);
      expect((await api('POST', `/v1/hosts/${byoc.hostId}/drain`, undefined, teamB.key)).status).toBe(404);
      expect((await api('POST', `/v1/hosts/${platform.hostId}/drain`, undefined, teamA.key)).status).toBe(403);

      // The token is spent on that host; team B does not see it; its secret is never listed.
      const tokens = await api('GET', '/v1/hosts/registration-tokens', undefined, teamA.key);
      expect(tokens.json.tokens).toEqual([expect.objectContaining({ id: byocTokenId, teamId: teamA.id, state: 'used', usedByHostId: byoc.hostId })]);
      expect(tokens.text).not.toContain(token.json.token);
      expect((await api('GET', '/v1/hosts/registration-tokens', undefined, teamB.key)).json.tokens).toEqual([]);
      const all = JSON.parse(await corral(['--output', 'json', 'token', 'list']));
      expect(all.tokens.map((t: { id: string }) => t.id)).toEqual(expect.arrayContaining([byocTokenId, platformToken.json.id]));
    });

    const teamAWorkloads: string[] = [];

    it("places the team's workloads on its own host and never another team's", async () => {
      // With the platform host draining, the team's own host is the only place for its workloads...
      expect((await api('POST', `/v1/hosts/${platform.hostId}/drain`)).json.status).toBe('draining');
      for (const name of ['alpha-1', 'alpha-2']) {
        const created = await api('POST', '/v1/workloads', sleeper(name), teamA.key);
        expect(created.status).toBe(201);
        teamAWorkloads.push(created.json.id);
      }
      for (const id of teamAWorkloads) expect(await waitForState(id, ['running'], teamA.key)).toMatchObject({ hostId: byoc.hostId, teamId: teamA.id });
      // ...and it is no place for team B's (nor for platform workloads).
      expect((await api('POST', '/v1/workloads', sleeper('beta-refused'), teamB.key)).status).toBe(409);
      expect((await api('POST', '/v1/workloads', sleeper('platform-refused'))).status).toBe(409);

      expect((await api('POST', `/v1/hosts/${platform.hostId}/undrain`)).json.status).toBe('online');
      for (const name of ['beta-1', 'beta-2']) {
        const created = await api('POST', '/v1/workloads', sleeper(name), teamB.key);
        expect(created.status).toBe(201);
        expect(await waitForState(created.json.id, ['running'], teamB.key)).toMatchObject({ hostId: platform.hostId, teamId: teamB.id });
      }
    });

    it('lets the team force-delete its own host, stopping its workloads, and revoke its token', async () => {
      const refused = await api('DELETE', `/v1/hosts/${byoc.hostId}`, undefined, teamA.key);
      expect(refused.status).toBe(409);
      expect([...refused.json.affectedWorkloads].sort()).toEqual([...teamAWorkloads].sort());
      expect((await api('DELETE', `/v1/hosts/${byoc.hostId}?force=true`, undefined, teamB.key)).status).toBe(404);

      const deleted = await api('DELETE', `/v1/hosts/${byoc.hostId}?force=true`, undefined, teamA.key);
      expect(deleted.status).toBe(200);
      expect([...deleted.json.stoppedWorkloads].sort()).toEqual([...teamAWorkloads].sort());
      for (const id of teamAWorkloads) expect((await waitForState(id, ['stopped', 'failed'], teamA.key)).state).toBe('stopped');
      expect(((await api('GET', '/v1/hosts', undefined, teamA.key)).json.hosts as { id: string }[]).map((h) => h.id)).toEqual([platform.hostId]);

      const revoked = await api('DELETE', `/v1/hosts/registration-tokens/${byocTokenId}`, undefined, teamA.key);
      expect(revoked.status).toBe(200);
      expect(revoked.json).toMatchObject({ id: byocTokenId, state: 'revoked', usedByHostId: byoc.hostId });
      const again = await api('DELETE', `/v1/hosts/registration-tokens/${byocTokenId}`, undefined, teamA.key);
      expect(again.json.revokedAt).toBe(revoked.json.revokedAt);
      expect((await api('DELETE', `/v1/hosts/registration-tokens/${byocTokenId}`, undefined, teamB.key)).status).toBe(404);
    });

    it('shows fleet health to admins only', async () => {
      const health = await api('GET', '/v1/fleet/health');
      expect(health.status).toBe(200);
      expect(health.json).toMatchObject({ brake: { active: false }, busConnected: true, databaseHealthy: true, hostsByStatus: { online: 1 } });
      expect((await api('GET', '/v1/fleet/health', undefined, teamA.key)).status).toBe(403);
      const cliHealth = await corral(['hosts', 'health']);
      expect(cliHealth).toMatch(/Brake:\s+off/);
    });

    let cliHost: ExtraAgent;

    it("lets a team do it all through the CLI: a scoped token with a TTL, its host listed, drained and undrained, the token revoked; another team's key gets not found", async () => {
      const json = async (args: string[], key: string) => JSON.parse(await corral(['--output', 'json', ...args], key));
      const created = await json(['token', 'create', '--ttl', '900', '--description', 'alpha cli rack', '--name-pattern', 'alpha-cli-*'], teamA.key);
      const ttlLeftMs = Date.parse(created.expiresAt) - Date.now();
      expect(ttlLeftMs).toBeGreaterThan(0);
      expect(ttlLeftMs).toBeLessThanOrEqual(900_000);
      const scope = { namePattern: 'alpha-cli-*', labels: {} };
      expect((await json(['token', 'list'], teamA.key)).tokens).toContainEqual(expect.objectContaining({ id: created.id, teamId: teamA.id, state: 'active', scope }));
      expect((await json(['token', 'list'], teamB.key)).tokens).toEqual([]);

      // A host outside the scope is refused and leaves the token unused (its agent exits).
      await expect(system.startExtraAgent({ name: 'outside-scope', registrationToken: created.token })).rejects.toThrow(/exited during start-up/);
      expect((await json(['token', 'list'], teamA.key)).tokens).toContainEqual(expect.objectContaining({ id: created.id, state: 'active' }));
      // One inside it registers as the team's host.
      cliHost = await system.startExtraAgent({ name: 'alpha-cli-1', registrationToken: created.token });
      await waitForHostStatus(cliHost.hostId, 'online');
      expect((await json(['token', 'list'], teamA.key)).tokens).toContainEqual(expect.objectContaining({ id: created.id, state: 'used', usedByHostId: cliHost.hostId, scope }));

      expect((await json(['hosts', 'list'], teamA.key)).hosts).toContainEqual(expect.objectContaining({ id: cliHost.hostId, teamId: teamA.id, status: 'online' }));
      expect((await json(['hosts', 'list'], teamB.key)).hosts.map((h: { id: string }) => h.id)).not.toContain(cliHost.hostId);
      expect(await json(['hosts', 'get', cliHost.hostId], teamA.key)).toMatchObject({ id: cliHost.hostId, name: 'alpha-cli-1', teamId: teamA.id, status: 'online' });
      const notFound = { exitCode: 1, stderrTail: expect.stringContaining('not found') };
      await expect(corral(['hosts', 'get', cliHost.hostId], teamB.key)).rejects.toMatchObject(notFound);
      await expect(corral(['hosts', 'drain', cliHost.hostId], teamB.key)).rejects.toMatchObject(notFound);
      await expect(corral(['hosts', 'delete', cliHost.hostId, '--force'], teamB.key)).rejects.toMatchObject(notFound);

      expect(await json(['hosts', 'drain', cliHost.hostId], teamA.key)).toMatchObject({ id: cliHost.hostId, status: 'draining' });
      expect((await api('GET', `/v1/hosts/${cliHost.hostId}`, undefined, teamA.key)).json.status).toBe('draining');
      expect(await json(['hosts', 'undrain', cliHost.hostId], teamA.key)).toMatchObject({ id: cliHost.hostId, status: 'online' });

      await expect(corral(['token', 'revoke', created.id], teamB.key)).rejects.toMatchObject(notFound);
      expect(await json(['token', 'revoke', created.id], teamA.key)).toMatchObject({ id: created.id, state: 'revoked', usedByHostId: cliHost.hostId });

      // The same scope over REST, shown the same way.
      const rest = await api('POST', '/v1/hosts/registration-tokens', { ttlSeconds: 600, scope: { namePattern: 'alpha-rest-?', labels: { zone: 'b' } } }, teamA.key);
      expect(rest.status).toBe(201);
      const listed = await api('GET', '/v1/hosts/registration-tokens', undefined, teamA.key);
      expect(listed.json.tokens).toContainEqual(expect.objectContaining({ id: rest.json.id, state: 'active', scope: { namePattern: 'alpha-rest-?', labels: { zone: 'b' } } }));
    });

    it('marks a host whose agent stops unreachable and its workloads missing, and restores both when the agent comes back', async () => {
      // Team B's workloads can only go to platform hosts, and this is the only one online.
      expect((await api('POST', `/v1/hosts/${platform.hostId}/undrain`)).json.status).toBe('online');
      const onPlatform: string[] = [];
      for (const name of ['beta-return-1', 'beta-return-2']) {
        const created = await api('POST', '/v1/workloads', sleeper(name), teamB.key);
        expect(created.status).toBe(201);
        expect(await waitForState(created.json.id, ['running'], teamB.key)).toMatchObject({ hostId: platform.hostId });
        onPlatform.push(created.json.id);
      }

      await platform.stop();
      await waitForHostStatus(platform.hostId, 'unreachable');
      expect(JSON.parse(await corral(['--output', 'json', 'hosts', 'get', platform.hostId]))).toMatchObject({ status: 'unreachable' });
      for (const id of onPlatform) await waitForState(id, ['missing'], teamB.key);
      // One silent host of a healthy fleet is no reason to brake; the others stay online.
      expect((await api('GET', `/v1/hosts/${cliHost.hostId}`)).json.status).toBe('online');
      expect((await fleetHealth()).brake.active).toBe(false);

      // Its workloads kept running without the agent: the returning heartbeat reports them alive.
      await platform.start();
      await waitForHostStatus(platform.hostId, 'online');
      for (const id of onPlatform) expect(await waitForState(id, ['running'], teamB.key)).toMatchObject({ id, hostId: platform.hostId });
    });
  });
});
