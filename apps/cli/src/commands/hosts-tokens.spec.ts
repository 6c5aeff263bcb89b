import { FailedPreconditionError, PermissionDeniedError } from '@corral/domain';
import { implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1, eventsV1, hostRegistryV1, HostStatus } from '@corral/proto';
import { runCaptured } from '../testing/run-captured';

// `corral hosts drain|undrain|delete|health` and `corral token list|revoke`
// against a scripted gateway: what is sent, what is printed (table and
// JSON), and how a refusal reads.

const KEY = 'crl_testkey0_secret';

const host = (status: HostStatus) =>
  hostRegistryV1.Host.fromPartial({ id: 'h-1', name: 'node-1', status, agentAddress: '10.0.0.1:1', teamId: 'team-a', createdAt: new Date('2026-01-01T00:00:00Z') });

describe('corral hosts and token commands', () => {
  let server: RunningGrpcServer;
  const received: { method: string; request: unknown }[] = [];

  beforeAll(async () => {
    const seen = (method: string, request: unknown) => received.push({ method, request });
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: apiV1.CorralServiceService,
          implementation: implementUnary(
            apiV1.CorralServiceService,
            {
              async drainHost(req) {
                seen('drainHost', req);
                const migrations = req.migrate
                  ? [
                      { workloadId: 'w-1', name: 'web', outcome: 'moved', replacementId: 'w-9', toHostId: 'h-2', reason: 'replaced by w-9, running' },
                      { workloadId: 'w-2', name: 'db', outcome: 'failed', replacementId: '', toHostId: '', reason: 'no replacement: no host has 4096 MB free; best candidate h-2 has 2048' },
                    ]
                  : [];
                return { host: host(HostStatus.HOST_STATUS_DRAINING), migrations };
              },
              async undrainHost(req) {
                seen('undrainHost', req);
                return { host: host(HostStatus.HOST_STATUS_ONLINE) };
              },
              async deleteHost(req) {
                seen('deleteHost', req);
                if (!req.force) throw new FailedPreconditionError('the host still runs 1 workload(s): w-1; stop them or delete with force');
                return { id: req.id, deletedNow: true, affectedWorkloadIds: ['w-1'], stoppedWorkloadIds: ['w-1'], unreachableWorkloadIds: ['w-2'] };
              },
              async getFleetHealth(req) {
                seen('getFleetHealth', req);
                return {
                  health: hostRegistryV1.GetFleetHealthResponse.fromPartial({
                    leader: true,
                    epoch: 7,
                    brakeActive: true,
                    brakeReasons: [eventsV1.FleetAlarmReason.FLEET_ALARM_REASON_BUS_UNHEALTHY],
                    brakeSince: new Date('2026-01-01T00:00:00Z'),
                    busConnected: false,
                    databaseHealthy: true,
                    heartbeatsReceived: 10,
                    hostsByStatus: { online: 2, draining: 1 },
                  }),
                };
              },
              async listRegistrationTokens(req) {
                seen('listRegistrationTokens', req);
                return {
                  tokens: [
                    hostRegistryV1.RegistrationToken.fromPartial({ id: 't-2', description: 'rack 2', teamId: 'team-a', expiresAt: new Date('2099-01-01T00:00:00Z') }),
                    hostRegistryV1.RegistrationToken.fromPartial({ id: 't-1', description: 'rack 1', teamId: 'team-a', usedAt: new Date('2026-01-01T00:00:00Z'), usedByHostId: 'h-1' }),
                  ],
                };
              },
              async revokeRegistrationToken(req) {
                seen('revokeRegistrationToken', req);
                if (req.id === 'platform') throw new PermissionDeniedError('permission denied');
                return { token: hostRegistryV1.RegistrationToken.fromPartial({ id: req.id, revokedAt: new Date('2026-01-02T00:00:00Z') }) };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
  });
  afterAll(() => server.stop());

  const run = (args: string[]) => runCaptured(args, { CORRAL_ADDR: server.address, CORRAL_API_KEY: KEY });

  it('drains and undrains', async () => {
    expect(await run(['hosts', 'drain', 'h-1'])).toEqual({ code: 0, stdout: 'host h-1 (node-1) drained: draining\n', stderr: '' });
    expect(received.at(-1)).toEqual({ method: 'drainHost', request: { id: 'h-1', migrate: false, maxParallel: 1 } });
    const json = await run(['-o', 'json', 'hosts', 'undrain', 'h-1']);
    expect(JSON.parse(json.stdout)).toMatchObject({ id: 'h-1', status: 'online', teamId: 'team-a' });
  });

  it('drains with --migrate: each outcome, exit 1 when a workload was left behind', async () => {
    const res = await run(['hosts', 'drain', 'h-1', '--migrate', '--max-parallel', '2']);
    expect(received.at(-1)).toEqual({ method: 'drainHost', request: { id: 'h-1', migrate: true, maxParallel: 2 } });
    expect(res).toEqual({
      code: 1,
      stdout: 'host h-1 (node-1) drained: draining\nmoved w-1 (web) -> w-9 on h-2\nFAILED w-2 (db): no replacement: no host has 4096 MB free; best candidate h-2 has 2048\n',
      stderr: '',
    });
    const json = JSON.parse((await run(['-o', 'json', 'hosts', 'drain', 'h-1', '--migrate'])).stdout);
    expect(json).toMatchObject({ id: 'h-1', status: 'draining', migrations: [{ workloadId: 'w-1', outcome: 'moved', replacementId: 'w-9' }, { workloadId: 'w-2', outcome: 'failed', replacementId: null }] });
    expect((await run(['hosts', 'drain', 'h-1', '--migrate', '--max-parallel', '0'])).code).not.toBe(0);
  });

  it('deletes: a refusal names the workloads and exits 1; --force reports what it stopped', async () => {
    const refused = await run(['hosts', 'delete', 'h-1']);
    expect(refused).toEqual({ code: 1, stdout: '', stderr: 'error: the host still runs 1 workload(s): w-1; stop them or delete with force\n' });
    expect(received.at(-1)).toEqual({ method: 'deleteHost', request: { id: 'h-1', force: false } });

    const forced = await run(['hosts', 'rm', 'h-1', '--force']);
    expect(forced.code).toBe(0);
    expect(forced.stdout).toBe('host h-1 deleted\nstopped 1 workload(s): w-1\ncould not reach the host to stop: w-2\n');
    expect(received.at(-1)).toEqual({ method: 'deleteHost', request: { id: 'h-1', force: true } });

    const json = await run(['--output', 'json', 'hosts', 'delete', '--force', 'h-1']);
    expect(JSON.parse(json.stdout)).toEqual({ id: 'h-1', deletedNow: true, affectedWorkloads: ['w-1'], stoppedWorkloads: ['w-1'], unreachableWorkloads: ['w-2'] });
  });

  it('shows fleet health', async () => {
    const table = await run(['hosts', 'health']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/Brake:\s+ON \(bus_unhealthy\) since 2026-01-01T00:00:00.000Z/);
    expect(table.stdout).toMatch(/Hosts:\s+2 online, 1 draining/);
    expect(table.stdout).toMatch(/Bus:\s+DISCONNECTED/);
    const json = JSON.parse((await run(['-o', 'json', 'hosts', 'health'])).stdout);
    expect(json).toMatchObject({ leader: true, epoch: 7, brake: { active: true, reasons: ['bus_unhealthy'], detail: null }, heartbeats: { received: 10 } });
  });

  it('lists and revokes registration tokens', async () => {
    const table = await run(['token', 'list']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATE\s+TEAM\s+DESCRIPTION\s+EXPIRES\s+USED BY$/);
    expect(lines[1]).toMatch(/^t-2\s+active\s+team-a\s+rack 2/);
    expect(lines[2]).toMatch(/^t-1\s+used\s+team-a\s+rack 1\s+-\s+h-1$/);
    const json = JSON.parse((await run(['-o', 'json', 'token', 'ls'])).stdout);
    expect(json.tokens.map((t: { id: string; state: string }) => [t.id, t.state])).toEqual([
      ['t-2', 'active'],
      ['t-1', 'used'],
    ]);

    expect(await run(['token', 'revoke', 't-2'])).toEqual({ code: 0, stdout: 'token t-2 revoked at 2026-01-02T00:00:00.000Z\n', stderr: '' });
    expect(received.at(-1)).toEqual({ method: 'revokeRegistrationToken', request: { id: 't-2' } });
    expect(await run(['token', 'revoke', 'platform'])).toMatchObject({ code: 1, stderr: 'error: permission denied\n' });
    expect((await run(['token', 'revoke'])).code).toBe(2);
  });
});
