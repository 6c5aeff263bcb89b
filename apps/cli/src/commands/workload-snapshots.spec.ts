import { FailedPreconditionError, NotFoundError } from '@corral/domain';
import { implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1, type agentV1 } from '@corral/proto';
import { runCaptured } from '../testing/run-captured';

// `corral workloads snapshots|snapshot-rm` against a scripted gateway that
// holds one workload's snapshots in memory.

const KEY = 'crl_testkey0_secret';

describe('corral workloads snapshots / snapshot-rm', () => {
  let server: RunningGrpcServer;
  let snapshots: agentV1.SnapshotInfo[];
  const calls: { method: string; request: unknown }[] = [];

  beforeAll(async () => {
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
              async listWorkloadSnapshots(req) {
                calls.push({ method: 'list', request: req });
                if (req.id !== 'w-1') throw new NotFoundError('workload not found');
                return { snapshots };
              },
              async deleteWorkloadSnapshot(req) {
                calls.push({ method: 'delete', request: req });
                if (req.snapshotId === 'snap-busy-00') throw new FailedPreconditionError('snapshot snap-busy-00 is in use: a restore from it is under way');
                const before = snapshots.length;
                snapshots = snapshots.filter((s) => s.snapshotId !== req.snapshotId);
                return { deleted: snapshots.length !== before };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
  });
  beforeEach(() => {
    snapshots = [
      { snapshotId: 'snap-20260101T000000-aa', sourceWorkloadId: 'w-1', createdAt: new Date('2026-01-01T00:00:00Z'), sizeBytes: 3 * 1024 * 1024, driver: 'qemu' },
      { snapshotId: 'snap-20260102T000000-bb', sourceWorkloadId: 'w-1', createdAt: new Date('2026-01-02T00:00:00Z'), sizeBytes: 512 * 1024, driver: 'qemu' },
    ];
  });
  afterAll(() => server.stop());

  const run = (args: string[]) => runCaptured(args, { CORRAL_ADDR: server.address, CORRAL_API_KEY: KEY });

  it('lists snapshots as a table and as REST-shaped JSON', async () => {
    const table = await run(['workloads', 'snapshots', 'w-1']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^SNAPSHOT\s+CREATED\s+SIZE\s+DRIVER$/);
    expect(lines[1]).toMatch(/^snap-20260101T000000-aa\s+2026-01-01T00:00:00.000Z\s+3.0 MiB\s+qemu$/);
    expect(lines).toHaveLength(3);
    const json = await run(['-o', 'json', 'workloads', 'snapshots', 'w-1']);
    expect(JSON.parse(json.stdout)).toEqual({
      snapshots: [
        { id: 'snap-20260101T000000-aa', sourceWorkloadId: 'w-1', createdAt: '2026-01-01T00:00:00.000Z', sizeBytes: 3 * 1024 * 1024, driver: 'qemu' },
        { id: 'snap-20260102T000000-bb', sourceWorkloadId: 'w-1', createdAt: '2026-01-02T00:00:00.000Z', sizeBytes: 512 * 1024, driver: 'qemu' },
      ],
    });
    expect((await run(['workloads', 'snapshots', 'nope'])).code).toBe(1);
  });

  it('deletes a snapshot, says so when it was already gone, and reports a refusal', async () => {
    const first = await run(['workloads', 'snapshot-rm', 'w-1', 'snap-20260101T000000-aa']);
    expect(first).toMatchObject({ code: 0, stdout: 'deleted snap-20260101T000000-aa\n' });
    expect(calls).toContainEqual({ method: 'delete', request: { id: 'w-1', snapshotId: 'snap-20260101T000000-aa' } });
    const again = await run(['-o', 'json', 'workloads', 'snapshot-rm', 'w-1', 'snap-20260101T000000-aa']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ id: 'w-1', snapshotId: 'snap-20260101T000000-aa', deleted: false });
    const busy = await run(['workloads', 'snapshot-rm', 'w-1', 'snap-busy-00']);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/in use/);
  });
});
