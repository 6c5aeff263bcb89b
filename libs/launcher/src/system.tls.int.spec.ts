import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { resolveProgram } from '@corral/exec';
import { checkHealth } from '@corral/grpc';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { NATS_SERVER_CANDIDATES, startSystem, type RunningSystem } from './system';

// The whole system with TLS on every channel it owns: the launcher's own
// nats-server serves TLS from the local CA (services get NATS_TLS_CA_FILE),
// host-registry serves TLS (agents verify it with AGENT_CONTROL_PLANE_CA_FILE),
// scheduler ↔ agent is mutual TLS, and workload state events carry the
// host's JWT. A workload's exit code reaches the API only through its state
// event, so a finished workload proves that path end to end.
jest.setTimeout(240_000);

function natsServerOnPath(): boolean {
  for (const candidate of NATS_SERVER_CANDIDATES) {
    try {
      resolveProgram(candidate, process.env.PATH ?? '');
      return true;
    } catch {
      // next
    }
  }
  console.log('[skip] launcher with TLS on its own nats-server: no nats-server binary (apt-get install nats-server)');
  return false;
}

/** The server's first protocol line (INFO {...}), read before any TLS. */
function natsInfo(port: number): Promise<Record<string, unknown>> {
  return new Promise((resolveInfo, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      const end = buffered.indexOf('\r\n');
      if (end < 0) return;
      socket.destroy();
      resolveInfo(JSON.parse(buffered.slice('INFO '.length, end)) as Record<string, unknown>);
    });
    socket.once('error', reject);
  });
}

(natsServerOnPath() ? describeWithDatabase : describe.skip)('startSystem with TLS on every channel', () => {
  let system: RunningSystem;
  let db: TestDatabase;
  let dataDir: string;
  const repoRoot = resolve(__dirname, '..', '..', '..');

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${system.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${system.adminKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'corral-launcher-tls-'));
    system = await startSystem({ repoRoot, dataDir, databaseUrl: db.url, portsMode: 'free', bus: 'auto' });
  });
  afterAll(async () => {
    await system?.stop();
    await db?.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('starts its nats-server with TLS only, from a 0600 config file', async () => {
    expect(system.busKind).toBe('nats-server');
    expect(system.natsTls).toBe(true);
    expect(await natsInfo(system.ports.nats)).toMatchObject({ tls_required: true });
    expect(statSync(join(dataDir, 'nats', 'nats-server.conf')).mode & 0o777).toBe(0o600);
  });

  it('serves host-registry over TLS only', async () => {
    const registry = system.services.find((s) => s.name === 'host-registry')?.address ?? '';
    await expect(checkHealth(registry, '', { deadlineMs: 2000 })).rejects.toMatchObject({ code: 14 /* UNAVAILABLE */ });
    await expect(checkHealth(registry, '', { deadlineMs: 5000, credentials: system.hostRegistryCredentials })).resolves.toBe('SERVING');
  });

  it('registers the local agent and carries its authenticated state events to the API', async () => {
    const hosts = await api('GET', '/v1/hosts');
    expect(hosts.json.hosts).toEqual([expect.objectContaining({ id: system.localHostId, status: 'online' })]);
    const created = await api('POST', '/v1/workloads', { name: 'over-tls', driver: 'process', command: ['/bin/sh', '-c', 'echo ok; exit 7'] });
    expect(created.status).toBe(201);
    let workload: Record<string, unknown> = created.json;
    for (let i = 0; i < 300 && !['stopped', 'failed'].includes(workload.state as string); i++) {
      await new Promise((r) => setTimeout(r, 100));
      workload = (await api('GET', `/v1/workloads/${created.json.id}`)).json;
    }
    expect(workload).toMatchObject({ state: 'failed', exitCode: 7 });
  });
});
