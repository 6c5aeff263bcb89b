// Writes and reads every model through the generated client on a database
// built only from prisma/migrations: if a migration disagreed with
// schema.prisma (a missing column, a wrong type or default), these fail.
import { createPrismaClient, disconnect, isUniqueViolation } from './client';
import { PrismaClient } from './generated/prisma/client';
import { describeWithPostgres } from './test-support/postgres';
import { createThrowawayDatabase, ThrowawayDatabase } from './throwaway/throwaway-database';

describeWithPostgres('generated client on a migrated database (Postgres)', () => {
  let database: ThrowawayDatabase;
  let prisma: PrismaClient;

  beforeAll(async () => {
    database = await createThrowawayDatabase();
    prisma = createPrismaClient(database.url, { maxConnections: 4 });
  });

  afterAll(async () => {
    await disconnect(prisma);
    await database.drop();
  });

  it('stores teams with unique names', async () => {
    const team = await prisma.team.create({ data: { name: 'acme' } });

    expect(team.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(team.createdAt).toBeInstanceOf(Date);
    expect(await prisma.team.findUnique({ where: { name: 'acme' } })).toEqual(team);
    const duplicate = await prisma.team.create({ data: { name: 'acme' } }).catch((error: unknown) => error);
    expect(isUniqueViolation(duplicate)).toBe(true);
  });

  it('stores API keys, team-scoped and platform-wide', async () => {
    const team = await prisma.team.create({ data: { name: 'keys-team' } });
    const teamKey = await prisma.apiKey.create({
      data: { teamId: team.id, name: 'ci', prefix: 'crl_ab12', secretHash: 'a'.repeat(64) },
    });
    const adminKey = await prisma.apiKey.create({
      data: { admin: true, name: 'ops', prefix: 'crl_cd34', secretHash: 'b'.repeat(64) },
    });

    expect(teamKey).toMatchObject({ admin: false, lastUsedAt: null, revokedAt: null });
    expect(adminKey.teamId).toBeNull();
    const found = await prisma.apiKey.findUnique({ where: { secretHash: 'a'.repeat(64) }, include: { team: true } });
    expect(found?.team?.name).toBe('keys-team');
    const usedAt = new Date('2030-01-02T03:04:05.678Z');
    const used = await prisma.apiKey.update({ where: { id: teamKey.id }, data: { lastUsedAt: usedAt } });
    expect(used.lastUsedAt).toEqual(usedAt);
    const reused = await prisma.apiKey
      .create({ data: { name: 'again', prefix: 'crl_ab12', secretHash: 'a'.repeat(64) } })
      .catch((error: unknown) => error);
    expect(isUniqueViolation(reused)).toBe(true);
  });

  it('stores hosts with JSON inventory and 64-bit sequence numbers', async () => {
    const capacity = { cpuMillis: 4000, memoryMb: 8192, diskMb: 100_000 };
    const drivers = [{ name: 'podman', healthy: true, version: '4.3.1', detail: '' }];
    const host = await prisma.host.create({
      data: { name: 'h1', agentAddress: '100.64.0.2:7443', capacity, drivers, labels: { zone: 'a' } },
    });

    expect(host).toMatchObject({ status: 'online', lastSeq: 0n, usage: {}, bootId: null, deletedAt: null });
    expect(host.updatedAt).toBeInstanceOf(Date);
    const beat = await prisma.host.update({
      where: { id: host.id },
      data: { lastSeq: 9_007_199_254_740_993n, bootId: 'boot-1', lastHeartbeatAt: new Date(), usage: { cpuMillis: 10 } },
    });
    expect(beat.lastSeq).toBe(9_007_199_254_740_993n);
    expect(beat.updatedAt.getTime()).toBeGreaterThanOrEqual(host.updatedAt.getTime());
    const found = await prisma.host.findUniqueOrThrow({ where: { id: host.id } });
    expect(found.capacity).toEqual(capacity);
    expect(found.drivers).toEqual(drivers);
    expect(found.labels).toEqual({ zone: 'a' });
  });

  it('stores registration tokens', async () => {
    const team = await prisma.team.create({ data: { name: 'byoc-team' } });
    const token = await prisma.registrationToken.create({
      data: { tokenHash: 'c'.repeat(64), teamId: team.id, description: 'rack 4', expiresAt: new Date(Date.now() + 3_600_000) },
    });

    expect(token).toMatchObject({ usedAt: null, usedByHostId: null, revokedAt: null });
    const used = await prisma.registrationToken.update({
      where: { tokenHash: 'c'.repeat(64) },
      data: { usedAt: new Date(), usedByHostId: 'host-that-may-be-gone' },
    });
    expect(used.usedByHostId).toBe('host-that-may-be-gone');
  });

  it('stores workloads with their events, and deletes the events with the workload', async () => {
    const team = await prisma.team.create({ data: { name: 'workload-team' } });
    const host = await prisma.host.create({ data: { name: 'h2', agentAddress: '100.64.0.3:7443', capacity: {} } });
    const workload = await prisma.workload.create({
      data: {
        name: 'web',
        teamId: team.id,
        hostId: host.id,
        driver: 'podman',
        command: ['httpd', '-f', '-p', '8080'],
        env: { PORT: '8080', SECRET: 's3cr3t' },
      },
    });
    expect(workload).toMatchObject({ state: 'pending', stateSeq: 0n, exitCode: null, reason: null });

    await prisma.workloadEvent.createMany({
      data: [
        { workloadId: workload.id, type: 'state', state: 'running', message: 'started', seq: 1n, data: { pid: 42 } },
        { workloadId: workload.id, type: 'log', message: 'no state', createdAt: new Date(Date.now() + 1000) },
      ],
    });
    const stopped = await prisma.workload.update({
      where: { id: workload.id },
      data: { state: 'stopped', stateSeq: 2n, exitCode: 137, reason: 'killed' },
      include: { events: { orderBy: { createdAt: 'asc' } }, host: true, team: true },
    });

    expect(stopped.command).toEqual(['httpd', '-f', '-p', '8080']);
    expect(stopped.env).toEqual({ PORT: '8080', SECRET: 's3cr3t' });
    expect(stopped).toMatchObject({ state: 'stopped', stateSeq: 2n, exitCode: 137, reason: 'killed' });
    expect(stopped.host?.id).toBe(host.id);
    expect(stopped.team?.name).toBe('workload-team');
    expect(stopped.events.map((event) => [event.type, event.state, event.seq, event.data])).toEqual([
      ['state', 'running', 1n, { pid: 42 }],
      ['log', null, null, null],
    ]);

    await prisma.workload.delete({ where: { id: workload.id } });
    expect(await prisma.workloadEvent.count({ where: { workloadId: workload.id } })).toBe(0);
  });

  it('keeps a workload when its host row is deleted, and refuses to delete a team that still owns one', async () => {
    const team = await prisma.team.create({ data: { name: 'owner-team' } });
    const host = await prisma.host.create({ data: { name: 'h3', agentAddress: '100.64.0.4:7443', capacity: {} } });
    const workload = await prisma.workload.create({
      data: { name: 'db', teamId: team.id, hostId: host.id, driver: 'qemu' },
    });

    await prisma.host.delete({ where: { id: host.id } });
    expect((await prisma.workload.findUniqueOrThrow({ where: { id: workload.id } })).hostId).toBeNull();
    await expect(prisma.team.delete({ where: { id: team.id } })).rejects.toThrow();
  });

  it('filters by the indexed columns', async () => {
    const team = await prisma.team.create({ data: { name: 'index-team' } });
    await prisma.workload.createMany({
      data: [
        { name: 'a', teamId: team.id, driver: 'process', state: 'running' },
        { name: 'b', teamId: team.id, driver: 'process', state: 'failed' },
      ],
    });

    const running = await prisma.workload.findMany({ where: { teamId: team.id, state: 'running' } });

    expect(running.map((workload) => workload.name)).toEqual(['a']);
  });
});
