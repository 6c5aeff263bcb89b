import type { FastifyInstance } from 'fastify';
import { UnavailableError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { HostStatus } from '@corral/proto';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { buildHttpApp } from './http-app';

const ADMIN_KEY = 'crl_admin000_adminsecret';
const TEAM_A_KEY = 'crl_teamaaaa_asecret';
const TEAM_B_KEY = 'crl_teambbbb_bsecret';

const keys = {
  [ADMIN_KEY]: { keyId: 'k-admin', admin: true, teamId: null },
  [TEAM_A_KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' },
  [TEAM_B_KEY]: { keyId: 'k-b', admin: false, teamId: 'team-b' },
};

describe('REST fleet membership', () => {
  let app: FastifyInstance;
  let scheduler: FakeScheduler;
  let registry: FakeHostRegistry;

  beforeEach(async () => {
    scheduler = new FakeScheduler();
    registry = new FakeHostRegistry();
    app = await buildHttpApp({
      operations: createCorralOperations({ scheduler, hostRegistry: registry, authenticate: fakeAuthenticator(keys) }),
      logger: silentLogger,
      bodyLimitBytes: 1024 * 1024,
    });
  });
  afterEach(() => app.close());

  const call = (method: 'GET' | 'POST' | 'DELETE', url: string, key: string | null = ADMIN_KEY) =>
    app.inject({ method, url, headers: key ? { authorization: `Bearer ${key}` } : {} });

  describe('drain and undrain', () => {
    it('drains and undrains a host, idempotently, answering the host', async () => {
      const host = registry.add({ name: 'h1' });
      const drained = await call('POST', `/v1/hosts/${host.id}/drain`);
      expect(drained.statusCode).toBe(200);
      expect(drained.json()).toMatchObject({ id: host.id, name: 'h1', status: 'draining' });
      expect((await call('POST', `/v1/hosts/${host.id}/drain`)).json().status).toBe('draining');
      const undrained = await call('POST', `/v1/hosts/${host.id}/undrain`);
      expect(undrained.statusCode).toBe(200);
      expect(undrained.json().status).toBe('online');
      expect((await call('POST', `/v1/hosts/${host.id}/undrain`)).json().status).toBe('online');
      // The host's agent address is internal: not part of the REST view.
      expect(drained.body).not.toContain('10.0.0.1');
    });

    it("lets a team manage its own hosts only: another team's is 404, a platform host 403", async () => {
      const own = registry.add({ teamId: 'team-a' });
      const theirs = registry.add({ teamId: 'team-b' });
      const platform = registry.add({ teamId: '' });
      expect((await call('POST', `/v1/hosts/${own.id}/drain`, TEAM_A_KEY)).statusCode).toBe(200);
      expect(registry.fleetCalls.at(-1)).toMatchObject({ method: 'drainHost', request: { id: own.id, teamId: 'team-a' } });
      const other = await call('POST', `/v1/hosts/${theirs.id}/drain`, TEAM_A_KEY);
      expect(other.statusCode).toBe(404);
      expect(other.json()).toEqual({ error: 'not_found', message: 'resource not found' });
      const forbidden = await call('POST', `/v1/hosts/${platform.id}/undrain`, TEAM_A_KEY);
      expect(forbidden.statusCode).toBe(403);
      expect(forbidden.json()).toEqual({ error: 'permission_denied', message: 'permission denied' });
      // Admins manage any host, their calls unscoped.
      expect((await call('POST', `/v1/hosts/${theirs.id}/drain`)).statusCode).toBe(200);
      expect(registry.fleetCalls.at(-1)).toMatchObject({ request: { teamId: '' } });
    });

    it('with migrate=true moves its live workloads and answers each outcome; without, asks the scheduler nothing', async () => {
      const host = registry.add({ teamId: 'team-a' });
      const live = scheduler.add({ hostId: host.id, teamId: 'team-a', name: 'web', state: 'running' });
      scheduler.add({ hostId: host.id, teamId: 'team-a', state: 'stopped' });
      expect((await call('POST', `/v1/hosts/${host.id}/drain`, TEAM_A_KEY)).json()).not.toHaveProperty('migrations');
      expect(scheduler.calls.some((c) => c.method === 'migrateHostWorkloads')).toBe(false);

      const res = await call('POST', `/v1/hosts/${host.id}/drain?migrate=true&max_parallel=3`, TEAM_A_KEY);
      expect(res.statusCode).toBe(200);
      const body = res.json();
      expect(body).toMatchObject({ id: host.id, status: 'draining' });
      expect(body.migrations).toEqual([
        { workloadId: live.id, name: 'web', outcome: 'moved', replacementId: expect.any(String), toHostId: 'h-elsewhere', reason: expect.stringContaining('replaced by') },
      ]);
      expect(scheduler.calls.find((c) => c.method === 'migrateHostWorkloads')?.request).toMatchObject({ hostId: host.id, teamId: 'team-a', maxParallel: 3 });
    });

    it('refuses a bad max_parallel naming it', async () => {
      const host = registry.add({});
      const res = await call('POST', `/v1/hosts/${host.id}/drain?migrate=true&max_parallel=0`);
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ error: 'invalid_argument', field: 'max_parallel' });
    });

    it('answers 409 with the fixed message when the host cannot be drained, and 400 naming a bad id', async () => {
      const down = registry.add({ status: HostStatus.HOST_STATUS_DOWN });
      const res = await call('POST', `/v1/hosts/${down.id}/drain`);
      expect(res.statusCode).toBe(409);
      expect(res.json()).toEqual({ error: 'failed_precondition', message: 'the resource is not in a state that allows this operation' });
      const bad = await call('POST', '/v1/hosts/bad%20id/drain');
      expect(bad.statusCode).toBe(400);
      expect(bad.json()).toMatchObject({ error: 'invalid_argument', field: 'id' });
    });

    it('requires a key', async () => {
      const host = registry.add({});
      expect((await call('POST', `/v1/hosts/${host.id}/drain`, null)).statusCode).toBe(401);
      expect((await call('DELETE', `/v1/hosts/${host.id}`, null)).statusCode).toBe(401);
      expect(registry.fleetCalls).toEqual([]);
    });
  });

  describe('delete', () => {
    it('deletes a host with nothing live on it; deleting again is 200 with deletedNow false', async () => {
      const host = registry.add({});
      scheduler.add({ hostId: host.id, state: 'stopped' });
      const res = await call('DELETE', `/v1/hosts/${host.id}`);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ id: host.id, deletedNow: true, affectedWorkloads: [], stoppedWorkloads: [], unreachableWorkloads: [] });
      expect(registry.fleetCalls.at(-1)).toMatchObject({ method: 'deleteHost', request: { id: host.id, teamId: '', force: false } });
      expect((await call('GET', '/v1/hosts')).json().hosts).toEqual([]);
      const again = await call('DELETE', `/v1/hosts/${host.id}`);
      expect(again.statusCode).toBe(200);
      expect(again.json()).toMatchObject({ id: host.id, deletedNow: false });
    });

    it('refuses with 409 listing the live workloads (and stops nothing) unless forced', async () => {
      const host = registry.add({});
      const running = scheduler.add({ hostId: host.id, state: 'running' });
      const paused = scheduler.add({ hostId: host.id, state: 'paused' });
      scheduler.add({ hostId: host.id, state: 'failed' });
      scheduler.add({ hostId: 'elsewhere', state: 'running' });
      const res = await call('DELETE', `/v1/hosts/${host.id}`);
      expect(res.statusCode).toBe(409);
      const body = res.json();
      expect(body.error).toBe('failed_precondition');
      expect([...body.affectedWorkloads].sort()).toEqual([running.id, paused.id].sort());
      expect(body.message).toContain(running.id);
      expect(body.message).toMatch(/^the host still runs 2 workload\(s\): .*; stop them or delete with force$/);
      expect(scheduler.calls.filter((c) => c.method === 'stopWorkload')).toEqual([]);
      expect(registry.fleetCalls.filter((c) => c.method === 'deleteHost')).toEqual([]);
      expect(registry.hosts.has(host.id)).toBe(true);
    });

    it("says 409 with an empty list when only the host's own report still lists workloads", async () => {
      const host = registry.add({});
      registry.reported.set(host.id, ['w-unknown-to-the-scheduler']);
      const res = await call('DELETE', `/v1/hosts/${host.id}`);
      expect(res.statusCode).toBe(409);
      // The registry's text (it names the workloads itself) never reaches the client.
      expect(res.json()).toEqual({
        error: 'failed_precondition',
        message: 'the host still reports live workloads; stop them or delete with force',
        affectedWorkloads: [],
      });
    });

    it('with force: drains, stops every live workload through the scheduler, then deletes', async () => {
      const host = registry.add({});
      const a = scheduler.add({ hostId: host.id, state: 'running', teamId: 'team-a' });
      const b = scheduler.add({ hostId: host.id, state: 'missing', teamId: 'team-b' });
      const done = scheduler.add({ hostId: host.id, state: 'stopped' });
      registry.reported.set(host.id, [a.id]);
      const res = await call('DELETE', `/v1/hosts/${host.id}?force=true`);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({
        id: host.id,
        deletedNow: true,
        affectedWorkloads: [a.id],
        stoppedWorkloads: [a.id, b.id].sort(),
        unreachableWorkloads: [],
      });
      const stops = scheduler.calls.filter((c) => c.method === 'stopWorkload').map((c) => (c.request as { id: string }).id);
      expect(stops.sort()).toEqual([a.id, b.id].sort());
      expect(stops).not.toContain(done.id);
      // A short grace: force does not wait long for a workload to leave.
      expect(scheduler.calls.find((c) => c.method === 'stopWorkload')?.request).toMatchObject({ timeoutSeconds: 5 });
      expect(registry.fleetCalls.map((c) => c.method)).toEqual(['drainHost', 'deleteHost']);
      expect(registry.fleetCalls.at(-1)).toMatchObject({ request: { force: true } });
      expect(scheduler.workloads.get(a.id)?.state).toBe('INSTANCE_STATE_STOPPING');
    });

    it('with force, still deletes when a stop cannot reach the host, and says which', async () => {
      const host = registry.add({ status: HostStatus.HOST_STATUS_DOWN });
      const w = scheduler.add({ hostId: host.id, state: 'missing' });
      jest.spyOn(scheduler, 'stopWorkload').mockRejectedValueOnce(new UnavailableError('connect ECONNREFUSED 10.0.0.1:7000'));
      const res = await call('DELETE', `/v1/hosts/${host.id}?force=true`);
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ deletedNow: true, stoppedWorkloads: [], unreachableWorkloads: [w.id] });
      expect(res.body).not.toContain('ECONNREFUSED');
    });

    it('with force, stops nothing for a caller who may not delete the host', async () => {
      const platform = registry.add({ teamId: '' });
      const theirs = registry.add({ teamId: 'team-b' });
      scheduler.add({ hostId: platform.id, state: 'running', teamId: 'team-a' });
      scheduler.add({ hostId: theirs.id, state: 'running', teamId: 'team-b' });
      expect((await call('DELETE', `/v1/hosts/${platform.id}?force=true`, TEAM_A_KEY)).statusCode).toBe(403);
      expect((await call('DELETE', `/v1/hosts/${theirs.id}?force=true`, TEAM_A_KEY)).statusCode).toBe(404);
      expect(scheduler.calls.filter((c) => c.method === 'stopWorkload')).toEqual([]);
      expect(registry.fleetCalls).toEqual([]);
    });

    it("lets a team force-delete its own host, stopping its workloads under its own scope", async () => {
      const own = registry.add({ teamId: 'team-a' });
      const w = scheduler.add({ hostId: own.id, state: 'running', teamId: 'team-a' });
      const res = await call('DELETE', `/v1/hosts/${own.id}?force=true`, TEAM_A_KEY);
      expect(res.statusCode).toBe(200);
      expect(res.json().stoppedWorkloads).toEqual([w.id]);
      expect(scheduler.calls.find((c) => c.method === 'stopWorkload')?.request).toMatchObject({ id: w.id, teamId: 'team-a' });
      expect(registry.fleetCalls.at(-1)).toMatchObject({ method: 'deleteHost', request: { teamId: 'team-a', force: true } });
    });

    it('refuses a malformed force flag naming it, and unknown query fields', async () => {
      const host = registry.add({});
      const res = await call('DELETE', `/v1/hosts/${host.id}?force=maybe`);
      expect(res.statusCode).toBe(400);
      expect(res.json()).toMatchObject({ error: 'invalid_argument', field: 'force' });
      expect((await call('DELETE', `/v1/hosts/${host.id}?forse=true`)).statusCode).toBe(400);
      expect(registry.hosts.has(host.id)).toBe(true);
    });

    it('answers 404 for a host that never existed', async () => {
      expect((await call('DELETE', '/v1/hosts/00000000-0000-0000-0000-000000000000')).statusCode).toBe(404);
    });
  });

  describe('fleet health', () => {
    it('shows admins the brake and intake figures with lowercase reasons', async () => {
      const res = await call('GET', '/v1/fleet/health');
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({
        leader: true,
        epoch: 3,
        brake: { active: true, reasons: ['mass_silence'], detail: '9 of 10 online hosts went silent at once', since: '2026-01-01T00:00:00.000Z' },
        lastCheckAt: null,
        busConnected: true,
        databaseHealthy: true,
        heartbeats: { received: 100, applied: 98, dropped: 2, latencyP50Ms: 0, latencyP99Ms: 0, flushP99Ms: 0 },
        hostsByStatus: { online: 1, draining: 1 },
      });
    });

    it('is 403 for team keys, without asking the registry', async () => {
      const res = await call('GET', '/v1/fleet/health', TEAM_A_KEY);
      expect(res.statusCode).toBe(403);
      expect(registry.fleetCalls).toEqual([]);
    });
  });

  describe('registration tokens', () => {
    it("lists the team's tokens (every token for admins) with their state, never a secret", async () => {
      const active = registry.addRegistrationToken({ teamId: 'team-a', description: 'rack 1' });
      const used = registry.addRegistrationToken({ teamId: 'team-a', usedAt: new Date('2026-01-01T01:00:00Z'), usedByHostId: 'h-1' });
      const expired = registry.addRegistrationToken({ teamId: 'team-a', expiresAt: new Date('2020-01-01T00:00:00Z') });
      const revoked = registry.addRegistrationToken({ teamId: 'team-a', revokedAt: new Date('2026-01-01T02:00:00Z'), usedAt: new Date('2026-01-01T01:00:00Z') });
      const platform = registry.addRegistrationToken({ teamId: '', scope: { namePattern: 'edge-*', labels: { zone: 'a' } } });

      const mine = await call('GET', '/v1/hosts/registration-tokens', TEAM_A_KEY);
      expect(mine.statusCode).toBe(200);
      const states = Object.fromEntries(mine.json().tokens.map((t: { id: string; state: string }) => [t.id, t.state]));
      expect(states).toEqual({ [active.id]: 'active', [used.id]: 'used', [expired.id]: 'expired', [revoked.id]: 'revoked' });
      expect(registry.fleetCalls.at(-1)).toMatchObject({ method: 'listRegistrationTokens', request: { teamId: 'team-a' } });
      expect(mine.json().tokens.find((t: { id: string }) => t.id === used.id)).toEqual({
        id: used.id,
        description: 'a token',
        teamId: 'team-a',
        state: 'used',
        createdAt: '2026-01-01T00:00:00.000Z',
        expiresAt: '2099-01-01T00:00:00.000Z',
        usedAt: '2026-01-01T01:00:00.000Z',
        usedByHostId: 'h-1',
        revokedAt: null,
        scope: { namePattern: null, labels: {} },
      });

      const all = await call('GET', '/v1/hosts/registration-tokens');
      expect(all.json().tokens).toHaveLength(5);
      expect(all.json().tokens.find((t: { id: string }) => t.id === platform.id)).toMatchObject({ teamId: null, scope: { namePattern: 'edge-*', labels: { zone: 'a' } } });
      expect(all.body).not.toMatch(/crt_|hash|secret/i);
      expect((await call('GET', '/v1/hosts/registration-tokens', TEAM_B_KEY)).json()).toEqual({ tokens: [] });
    });

    it("revokes idempotently; another team's token is 404", async () => {
      const token = registry.addRegistrationToken({ teamId: 'team-a' });
      const first = await call('DELETE', `/v1/hosts/registration-tokens/${token.id}`, TEAM_A_KEY);
      expect(first.statusCode).toBe(200);
      expect(first.json()).toMatchObject({ id: token.id, state: 'revoked', revokedAt: '2026-01-02T00:00:00.000Z' });
      const again = await call('DELETE', `/v1/hosts/registration-tokens/${token.id}`, TEAM_A_KEY);
      expect(again.statusCode).toBe(200);
      expect(again.json().revokedAt).toBe('2026-01-02T00:00:00.000Z');
      expect((await call('DELETE', `/v1/hosts/registration-tokens/${token.id}`, TEAM_B_KEY)).statusCode).toBe(404);
      const bad = await call('DELETE', '/v1/hosts/registration-tokens/..');
      expect(bad.statusCode).toBe(400);
      expect(bad.json().field).toBe('id');
    });

    it('keeps GET /v1/hosts/{id} working next to the token routes', async () => {
      const host = registry.add({ name: 'beside' });
      expect((await call('GET', `/v1/hosts/${host.id}`)).json().name).toBe('beside');
    });
  });
});
