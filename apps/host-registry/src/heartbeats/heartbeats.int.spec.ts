import { HostHeartbeat } from '@corral/proto';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { registerHost } from '../hosts/host-inventory';
import { createRegistrationToken } from '../registration/registration-tokens';
import { applyHeartbeat } from './heartbeat-intake';

describeWithDatabase('heartbeat intake and liveness', () => {
  let db: TestDatabase;
  let hostId: string;
  const t0 = new Date('2026-11-23T10:00:00Z');
  const at = (ms: number) => new Date(t0.getTime() + ms);
  const hb = (bootId: string, seq: number, sentMs: number, memoryMb = seq) =>
    HostHeartbeat.fromPartial({ hostId, bootId, seq, sentAt: at(sentMs), usage: { cpuMillis: 1, memoryMb, diskMb: 1 }, agentAddress: '127.0.0.1:50061' });

  beforeAll(async () => {
    db = await createTestDatabase();
    const token = await createRegistrationToken(db.prisma, { ttlSeconds: 600, description: '' }, t0);
    ({ hostId } = await registerHost(
      db.prisma,
      { registrationToken: token.token, name: 'hb', agentAddress: '127.0.0.1:50060', capacity: { cpuMillis: 1, memoryMb: 1, diskMb: 1 }, drivers: [], labels: {} },
      { secret: 'y'.repeat(40), ttlSeconds: 600 },
      t0,
    ));
  });
  afterAll(() => db.drop());

  const host = () => db.prisma.host.findUniqueOrThrow({ where: { id: hostId } });

  it('applies heartbeats in order and drops duplicates and late ones', async () => {
    expect(await applyHeartbeat(db.prisma, hb('boot-1', 1, 1000), at(1000))).toBe('applied');
    expect(await applyHeartbeat(db.prisma, hb('boot-1', 3, 3000), at(3000))).toBe('applied');
    expect(await applyHeartbeat(db.prisma, hb('boot-1', 3, 3000), at(3100))).toBe('stale');
    expect(await applyHeartbeat(db.prisma, hb('boot-1', 2, 2000), at(3200))).toBe('stale');
    const row = await host();
    expect(row.lastSeq).toBe(3n);
    expect(row.usage).toMatchObject({ memoryMb: 3 });
    expect(row.agentAddress).toBe('127.0.0.1:50061');
  });

  it('accepts a new boot sent later, and refuses a late message from the old boot', async () => {
    expect(await applyHeartbeat(db.prisma, hb('boot-2', 1, 5000, 100), at(5000))).toBe('applied');
    expect(await applyHeartbeat(db.prisma, hb('boot-1', 4, 4000), at(5100))).toBe('stale');
    const row = await host();
    expect(row.bootId).toBe('boot-2');
    expect(row.usage).toMatchObject({ memoryMb: 100 });
  });

  it('tolerates any delivery order of one boot: the highest seq wins', async () => {
    const seqs = [7, 5, 9, 6, 9, 8];
    for (const seq of seqs) await applyHeartbeat(db.prisma, hb('boot-2', seq, 5000 + seq * 10, seq), at(6000));
    const row = await host();
    expect(row.lastSeq).toBe(9n);
    expect(row.usage).toMatchObject({ memoryMb: 9 });
  });

  it('does not bring a draining host online, and ignores unknown hosts', async () => {
    await db.prisma.host.update({ where: { id: hostId }, data: { status: 'draining' } });
    await applyHeartbeat(db.prisma, hb('boot-2', 11, 9100), at(9100));
    expect((await host()).status).toBe('draining');
    expect(await applyHeartbeat(db.prisma, HostHeartbeat.fromPartial({ hostId: '00000000-0000-0000-0000-000000000000', bootId: 'b', seq: 1 }), t0)).toBe('unknown-host');
  });
});
