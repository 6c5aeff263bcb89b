import { createClient, Metadata, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1, eventsV1, HostStatus } from '@corral/proto';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { corralGrpcService } from './corral-grpc-service';

const ADMIN_KEY = 'crl_admin000_adminsecret';
const TEAM_A_KEY = 'crl_teamaaaa_asecret';

describe('public gRPC fleet membership', () => {
  let server: RunningGrpcServer;
  let scheduler: FakeScheduler;
  let registry: FakeHostRegistry;
  const clients: PromiseClient<apiV1.CorralServiceClient>[] = [];

  beforeAll(async () => {
    scheduler = new FakeScheduler();
    registry = new FakeHostRegistry();
    const operations = createCorralOperations({
      scheduler,
      hostRegistry: registry,
      authenticate: fakeAuthenticator({
        [ADMIN_KEY]: { keyId: 'k-admin', admin: true, teamId: null },
        [TEAM_A_KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' },
      }),
    });
    server = await startGrpcServer({ host: '127.0.0.1', port: 0, logger: silentLogger, services: [corralGrpcService(operations, silentLogger)] });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await server.stop();
  });

  const client = (key: string) => {
    const c = createClient(apiV1.CorralServiceClient, server.address, {
      deadlineMs: 5000,
      metadata: () => {
        const md = new Metadata();
        md.set('authorization', `Bearer ${key}`);
        return md;
      },
    });
    clients.push(c);
    return c;
  };

  it('drains and undrains', async () => {
    const host = registry.add({ teamId: 'team-a' });
    expect((await client(TEAM_A_KEY).drainHost({ id: host.id, migrate: false, maxParallel: 0 })).host?.status).toBe(HostStatus.HOST_STATUS_DRAINING);
    expect((await client(TEAM_A_KEY).undrainHost({ id: host.id })).host?.status).toBe(HostStatus.HOST_STATUS_ONLINE);
    const platform = registry.add({ teamId: '' });
    await expect(client(TEAM_A_KEY).drainHost({ id: platform.id, migrate: false, maxParallel: 0 })).rejects.toMatchObject({ code: 'PERMISSION_DENIED', message: 'permission denied' });
  });

  it('drains with migrate: answers each workload moved, having asked the scheduler with the caller\'s team and max_parallel', async () => {
    const host = registry.add({ teamId: 'team-a' });
    const w = scheduler.add({ hostId: host.id, teamId: 'team-a', state: 'running' });
    const res = await client(TEAM_A_KEY).drainHost({ id: host.id, migrate: true, maxParallel: 2 });
    expect(res.host?.status).toBe(HostStatus.HOST_STATUS_DRAINING);
    expect(res.migrations).toEqual([expect.objectContaining({ workloadId: w.id, outcome: 'moved', toHostId: scheduler.migrationTarget })]);
    expect(scheduler.calls.find((c) => c.method === 'migrateHostWorkloads')?.request).toMatchObject({ hostId: host.id, teamId: 'team-a', maxParallel: 2 });
  });

  it('refuses a delete with FAILED_PRECONDITION naming the live workloads, and force-deletes', async () => {
    const host = registry.add({});
    const w = scheduler.add({ hostId: host.id, state: 'running' });
    await expect(client(ADMIN_KEY).deleteHost({ id: host.id, force: false })).rejects.toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: `the host still runs 1 workload(s): ${w.id}; stop them or delete with force`,
    });
    const res = await client(ADMIN_KEY).deleteHost({ id: host.id, force: true });
    expect(res).toEqual({ id: host.id, deletedNow: true, affectedWorkloadIds: [], stoppedWorkloadIds: [w.id], unreachableWorkloadIds: [] });
    expect((await client(ADMIN_KEY).listHosts({})).hosts.map((h) => h.id)).not.toContain(host.id);
  });

  it('shows fleet health to admins only', async () => {
    const res = await client(ADMIN_KEY).getFleetHealth({});
    expect(res.health).toMatchObject({ leader: true, brakeActive: true, brakeReasons: [eventsV1.FleetAlarmReason.FLEET_ALARM_REASON_MASS_SILENCE] });
    await expect(client(TEAM_A_KEY).getFleetHealth({})).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
  });

  it('lists and revokes registration tokens within the team', async () => {
    const mine = registry.addRegistrationToken({ teamId: 'team-a' });
    registry.addRegistrationToken({ teamId: 'team-b' });
    const listed = await client(TEAM_A_KEY).listRegistrationTokens({});
    expect(listed.tokens.map((t) => t.id)).toEqual([mine.id]);
    const revoked = await client(TEAM_A_KEY).revokeRegistrationToken({ id: mine.id });
    expect(revoked.token?.revokedAt).toBeInstanceOf(Date);
    await expect(client(TEAM_A_KEY).revokeRegistrationToken({ id: 'nope' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
