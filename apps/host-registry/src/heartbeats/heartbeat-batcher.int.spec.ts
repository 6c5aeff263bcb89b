import { InstanceState } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { heartbeat, insertHosts } from '../__tests__/fleet';
import { HeartbeatBatcher } from './heartbeat-batcher';

describeWithDatabase('heartbeat batcher (batched, guarded writes)', () => {
  let db: TestDatabase;
  const t0 = new Date('2026-12-03T10:00:00Z');
  const at = (ms: number) => new Date(t0.getTime() + ms);

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db?.drop());

  const row = (id: string) => db.prisma.host.findUniqueOrThrow({ where: { id } });

  it('stores the newest heartbeat per host in one flush and drops duplicates, late and reordered ones', async () => {
    const [a, b] = await insertHosts(db.prisma, 2, null);
    const batcher = new HeartbeatBatcher(db.prisma);
    for (const seq of [3, 1, 3, 2]) batcher.offer(heartbeat(a, 'boot-1', seq, at(seq * 1000)), at(seq * 1000));
    batcher.offer(heartbeat(b, 'boot-1', 1, at(1000)), at(5000));
    expect(await batcher.flush()).toMatchObject({ batch: 2, applied: 2, returned: [] });
    expect(await row(a)).toMatchObject({ bootId: 'boot-1', lastSeq: 3n, usage: { memoryMb: 3 }, agentAddress: '127.0.0.1:50061', lastHeartbeatAt: at(3000) });
    expect((await row(b)).lastHeartbeatAt).toEqual(at(5000));

    // Late and duplicated after the flush: refused by the database guard.
    batcher.offer(heartbeat(a, 'boot-1', 2, at(2000)), at(6000));
    expect(await batcher.flush()).toMatchObject({ batch: 1, applied: 0 });
    batcher.offer(heartbeat(a, 'boot-1', 3, at(3000)), at(6000));
    expect(await batcher.flush()).toMatchObject({ applied: 0 });
    expect(await row(a)).toMatchObject({ lastSeq: 3n, lastHeartbeatAt: at(3000) });
    expect(batcher.received).toBe(7);
    expect(batcher.applied).toBe(2);
    expect(batcher.dropped).toBe(5);
  });

  it('orders across replicas: two batchers flushing the same host keep the highest seq, and a new boot only if sent later', async () => {
    const [h] = await insertHosts(db.prisma, 1, null);
    const r1 = new HeartbeatBatcher(db.prisma);
    const r2 = new HeartbeatBatcher(db.prisma);
    r1.offer(heartbeat(h, 'boot-1', 9, at(9000)), at(9000));
    r2.offer(heartbeat(h, 'boot-1', 8, at(8000)), at(9100));
    await Promise.all([r1.flush(), r2.flush()]);
    expect((await row(h)).lastSeq).toBe(9n);

    // An old boot's message sent before the newest one is refused; a new boot sent later applies.
    r2.offer(heartbeat(h, 'boot-0', 50, at(5000)), at(9200));
    expect((await r2.flush()).applied).toBe(0);
    r1.offer(heartbeat(h, 'boot-2', 1, at(10_000), { memoryMb: 77 }), at(10_000));
    expect((await r1.flush()).applied).toBe(1);
    expect(await row(h)).toMatchObject({ bootId: 'boot-2', lastSeq: 1n, usage: { memoryMb: 77 } });
  });

  it('brings an unreachable host back online (reported once), keeps a draining host draining, and ignores deleted hosts', async () => {
    const [lost, drained, gone] = await insertHosts(db.prisma, 3, null);
    await db.prisma.host.update({ where: { id: lost }, data: { status: 'unreachable' } });
    await db.prisma.host.update({ where: { id: drained }, data: { status: 'draining' } });
    await db.prisma.host.update({ where: { id: gone }, data: { status: 'down', deletedAt: t0 } });
    const batcher = new HeartbeatBatcher(db.prisma);
    const workloads = [{ workloadId: 'w-1', state: InstanceState.INSTANCE_STATE_RUNNING }];
    batcher.offer(heartbeat(lost, 'b', 1, at(1000), { workloads }), at(1000));
    batcher.offer(heartbeat(drained, 'b', 1, at(1000)), at(1000));
    batcher.offer(heartbeat(gone, 'b', 1, at(1000)), at(1000));
    const result = await batcher.flush();
    expect(result).toMatchObject({ batch: 3, applied: 2, returned: [{ hostId: lost, workloads }] });
    expect(await row(lost)).toMatchObject({ status: 'online', reportedWorkloads: [{ workloadId: 'w-1', state: 'running' }] });
    expect((await row(drained)).status).toBe('draining');
    expect(await row(gone)).toMatchObject({ status: 'down', lastHeartbeatAt: null });

    batcher.offer(heartbeat(lost, 'b', 2, at(2000), { workloads }), at(2000));
    expect((await batcher.flush()).returned).toEqual([]);
  });
});
