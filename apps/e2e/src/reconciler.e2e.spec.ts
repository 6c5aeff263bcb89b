import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startSystem, type RunningSystem } from '@corral/launcher';
import { createTestDatabase, eventually, natsUrlOrSkip, type TestDatabase } from '@corral/testing';

// Every service its own process on real Postgres and NATS with the real
// reconciler: a workload's process is killed behind Corral's back, the
// reconciler restarts it per its restart policy, and GET /v1/events tells
// the drift and the action with their reasons.

const repoRoot = resolve(__dirname, '..', '..', '..');
const databaseUrl = process.env.DATABASE_URL;
const natsUrl = natsUrlOrSkip();
const describeE2e = databaseUrl && natsUrl ? describe : describe.skip;
if (!databaseUrl || !natsUrl) console.warn('e2e skipped: DATABASE_URL and NATS_URL must both be set');

jest.setTimeout(240_000);

/** Pids of processes whose argv contains `needle` exactly. */
function pidsWithArgument(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes(needle)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

describeE2e('the reconciler end to end', () => {
  let db: TestDatabase;
  let system: RunningSystem;
  let dataDir: string;
  let adminKey: string;

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are asserted field by field
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text };
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-e2e-reconciler-'));
    system = await startSystem({
      repoRoot,
      dataDir,
      databaseUrl: db.url,
      natsUrl,
      portsMode: 'free',
      localAgent: false,
      reconcilerEnv: { RECONCILE_INTERVAL_MS: '500', RECONCILE_INTENT_GRACE_MS: '2000', RECONCILE_PROVISIONING_TIMEOUT_MS: '10000' },
    });
    adminKey = system.adminKey!;
    const token = await api('POST', '/v1/hosts/registration-tokens', { ttlSeconds: 600, description: 'reconciler e2e' });
    const hostId = await system.startAgent({ registrationToken: token.json.token });
    await eventually(async () => ((await api('GET', '/v1/hosts')).json?.hosts ?? []).find((h: { id: string; status: string }) => h.id === hostId && h.status === 'online'), {
      timeoutMs: 60_000,
      what: 'host online',
    });
  });

  afterAll(async () => {
    if (system) {
      const { json } = await api('GET', '/v1/workloads').catch(() => ({ json: undefined }));
      for (const w of json?.workloads ?? []) if (!['stopped', 'failed', 'retired'].includes(w.state)) await api('DELETE', `/v1/workloads/${w.id}?purge=true`);
      await system.stop();
    }
    await db?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('restarts a workload whose process was killed behind its back, and the audit trail says why', async () => {
    const marker = String(900_000 + Math.floor(Math.random() * 99_999));
    const created = await api('POST', '/v1/workloads', { name: 'crashy', driver: 'process', command: ['/bin/sleep', marker] });
    expect(created.status).toBe(201);
    const id: string = created.json.id;
    // Restart policies come from service definitions; a standalone workload's is never, so this one gets one here.
    await db.prisma.workload.update({ where: { id }, data: { restartPolicy: { policy: 'on-failure', maxAttempts: 2, delaySeconds: 0 } } });
    await eventually(async () => ((await api('GET', `/v1/workloads/${id}`)).json?.state === 'running' ? true : undefined), { what: 'running' });
    const [pid] = await eventually(() => {
      const pids = pidsWithArgument(marker);
      return pids.length === 1 ? pids : undefined;
    }, { what: 'the workload process' });

    process.kill(pid, 'SIGKILL');

    // A new process with the same command, under the same workload id.
    const [newPid] = await eventually(() => {
      const pids = pidsWithArgument(marker).filter((p) => p !== pid);
      return pids.length === 1 ? pids : undefined;
    }, { timeoutMs: 60_000, what: 'the restarted process' }).catch((err) => {
      // What the reconciler and the scheduler did meanwhile, for whoever reads the failure.
      for (const name of ['reconciler', 'scheduler'] as const) console.error(`${name} log:\n${readFileSync(system.logPath(name), 'utf8').split('\n').slice(-30).join('\n')}`);
      throw err;
    });
    expect(newPid).not.toBe(pid);
    await eventually(async () => ((await api('GET', `/v1/workloads/${id}`)).json?.state === 'running' ? true : undefined), { what: 'running again' });
    const row = await db.prisma.workload.findUniqueOrThrow({ where: { id } });
    expect(row.restarts).toBe(1);

    const { status, json } = await api('GET', `/v1/events?subject=${id}`);
    expect(status).toBe(200);
    const trail = json.events.map((e: { kind: string; action: string; outcome: string }) => `${e.kind}:${e.action}:${e.outcome}`);
    expect(trail).toEqual(['drift:ended:observed', 'action:restart:succeeded']);
    expect(json.events[0].reason).toContain('exited with code 137');
    expect(json.events[1].reason).toContain('restart 1 of 2');
    expect(json.events[1].actor).toMatch(/^reconciler\//);

    const followed = await fetch(`${system.gatewayUrl}/v1/events?follow=true&subject=${id}`, { headers: { authorization: `Bearer ${adminKey}` } });
    const reader = followed.body!.getReader();
    let text = '';
    while (text.split('\n').length < 3) text += Buffer.from((await reader.read()).value ?? []).toString('utf8');
    await reader.cancel();
    expect(text.split('\n').slice(0, 2).map((l) => JSON.parse(l).action)).toEqual(['ended', 'restart']);

    const bad = await api('GET', '/v1/events?kind=nope');
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('kind');
  });

  it('the mid-create race: the scheduler dies between the intent and the agent call; nothing is reaped inside the grace window, then the intent fails and nothing leaked', async () => {
    const hosts = (await api('GET', '/v1/hosts')).json.hosts as Array<{ id: string; status: string }>;
    const hostId = hosts.find((h) => h.status === 'online')!.id;
    const marker = String(700_000 + Math.floor(Math.random() * 99_999));
    await system.killService('scheduler');
    try {
      // What the scheduler's store writes before it calls the agent (it died right after).
      const intent = await db.prisma.workload.create({ data: { name: 'half-made', driver: 'process', command: ['/bin/sleep', marker], hostId, state: 'pending' } });
      // Inside the grace window (2 s here) nothing touches it.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect((await db.prisma.workload.findUniqueOrThrow({ where: { id: intent.id } })).state).toBe('pending');
      expect(await db.prisma.auditEvent.count({ where: { subjectId: intent.id } })).toBe(0);
      // Past the provisioning timeout (10 s here) the reconciler fails it; no process of it ever ran.
      const failed = await eventually(async () => {
        const row = await db.prisma.workload.findUniqueOrThrow({ where: { id: intent.id } });
        return row.state === 'failed' ? row : undefined;
      }, { timeoutMs: 60_000, what: 'the stuck intent to be failed' });
      expect(failed.reason).toContain('failed by the reconciler');
      expect(pidsWithArgument(marker)).toEqual([]);
      const trail = (await api('GET', `/v1/events?subject=${intent.id}`)).json.events.map((e: { kind: string; action: string }) => `${e.kind}:${e.action}`);
      expect(trail).toEqual(['drift:stuck', 'action:fail-stuck']);
    } finally {
      await system.startService('scheduler');
    }
  });

  it('reaps a runtime no record wants any more (after the grace window), and says so', async () => {
    const marker = String(800_000 + Math.floor(Math.random() * 99_999));
    const created = await api('POST', '/v1/workloads', { name: 'forgotten', driver: 'process', command: ['/bin/sleep', marker] });
    const id: string = created.json.id;
    await eventually(async () => ((await api('GET', `/v1/workloads/${id}`)).json?.state === 'running' ? true : undefined), { what: 'running' });
    const [pid] = await eventually(() => {
      const pids = pidsWithArgument(marker);
      return pids.length === 1 ? pids : undefined;
    }, { what: 'the workload process' });
    // Its record goes behind Corral's back: the process on the host is now an orphan.
    await db.prisma.workload.delete({ where: { id } });
    await eventually(() => (pidsWithArgument(marker).length === 0 ? true : undefined), { timeoutMs: 60_000, what: 'the orphan to be reaped' });
    expect(pidsWithArgument(marker)).not.toContain(pid);
    // The action's entry is written once the agent has answered (the process dies before that).
    const json = await eventually(async () => {
      const res = await api('GET', `/v1/events?subject=${id}`);
      return res.json?.events?.length >= 2 ? res.json : undefined;
    }, { what: 'the reap in the audit trail' });
    expect(json.events.map((e: { kind: string; action: string; outcome: string }) => `${e.kind}:${e.action}:${e.outcome}`)).toEqual(['drift:orphan:observed', 'action:reap-orphan:succeeded']);
    expect(json.events[0].reason).toContain('no record');
  });
});
