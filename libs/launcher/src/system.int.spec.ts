import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { checkHealth, mutualTlsProbeCredentials } from '@corral/grpc';
import { startSystem, type RunningSystem } from './system';

// `npm start` on a machine with nothing installed: embedded PGlite and the
// embedded NATS-protocol broker, every service a real process. The e2e suite
// covers the same flow on real Postgres and NATS; this one proves the
// embedded defaults carry it too.
jest.setTimeout(240_000);

describe('startSystem on embedded defaults', () => {
  let system: RunningSystem;
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
    dataDir = mkdtempSync(join(tmpdir(), 'corral-launcher-'));
    system = await startSystem({ repoRoot, dataDir, portsMode: 'free', bus: 'embedded' });
  });
  afterAll(async () => {
    await system?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('starts every service with a local host online, and runs a workload to completion', async () => {
    expect(system.databaseKind).toBe('embedded-pglite');
    expect(system.busKind).toBe('embedded-broker');
    expect(system.adminKey).toMatch(/^crl_/);
    expect(system.services.map((s) => s.name).sort()).toEqual(
      ['api-gateway', 'edge-router', 'host-registry', 'node-agent', 'reconciler', 'scheduler', 'secrets-broker'].sort(),
    );
    const hosts = await api('GET', '/v1/hosts');
    expect(hosts.json.hosts).toEqual([expect.objectContaining({ id: system.localHostId, status: 'online' })]);

    const created = await api('POST', '/v1/workloads', { name: 'embedded', driver: 'process', command: ['/bin/sh', '-c', 'echo ok; exit 7'] });
    expect(created.status).toBe(201);
    // The exit arrives as a state event over the embedded broker.
    let workload: Record<string, unknown> = created.json;
    for (let i = 0; i < 200 && !['stopped', 'failed'].includes(workload.state as string); i++) {
      await new Promise((r) => setTimeout(r, 100));
      workload = (await api('GET', `/v1/workloads/${created.json.id}`)).json;
    }
    expect(workload).toMatchObject({ state: 'failed', exitCode: 7 });
  });

  it('runs the scheduler and the agent over mutual TLS from a local CA (the workload above went through it)', async () => {
    const { pkiDir, controlPlaneTls } = system;
    if (!pkiDir || !controlPlaneTls) throw new Error('the launcher did not set up mutual TLS');
    expect(statSync(join(pkiDir, 'ca-key.pem')).mode & 0o777).toBe(0o600);
    const agent = system.services.find((s) => s.name === 'node-agent')?.address ?? '';
    await expect(checkHealth(agent, '', { deadlineMs: 2000 })).rejects.toMatchObject({ code: 14 /* UNAVAILABLE */ });
    await expect(checkHealth(agent, '', { deadlineMs: 5000, credentials: mutualTlsProbeCredentials(controlPlaneTls) })).resolves.toBe('SERVING');
  });

  it('serves host-registry over TLS only, with a certificate the local CA vouches for', async () => {
    const registry = system.services.find((s) => s.name === 'host-registry')?.address ?? '';
    await expect(checkHealth(registry, '', { deadlineMs: 2000 })).rejects.toMatchObject({ code: 14 /* UNAVAILABLE */ });
    await expect(checkHealth(registry, '', { deadlineMs: 5000, credentials: system.hostRegistryCredentials })).resolves.toBe('SERVING');
    expect(system.controlPlaneCaPin).toMatch(/^[0-9a-f]{64}$/);
    // The embedded broker has no TLS.
    expect(system.natsTls).toBe(false);
  });

  it('stops every service process', async () => {
    const pids = system.services.map((s) => s.pid);
    await system.stop();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});
