import { randomUUID } from 'node:crypto';
import { createPrismaClient, type PrismaClient } from '@corral/db';
import { isCorralError, type PlacementRequest } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { AgentPool } from '../agents/agent-pool';
import type { DirectoryHost, HostDirectory } from '../hosts/host-directory';
import { WorkloadService } from '../workloads/workload-service';
import { WorkloadStore } from '../workloads/workload-store';
import { HOLDING_STATES, postgresAllocationLedger } from './allocation-ledger';
import { PlacementService } from './placement-service';

// Two PlacementService instances on two connection pools are two scheduler
// replicas: their in-process books know nothing of each other, so only the
// per-host advisory lock and the re-check under it keep them from promising
// the same free memory twice.
describeWithDatabase('PlacementService against Postgres', () => {
  let db: TestDatabase;
  let other: PrismaClient;

  const host = (id: string, memoryMb: number): DirectoryHost => ({
    id,
    name: id,
    status: 'online',
    teamId: null,
    drivers: [{ name: 'process', healthy: true }],
    capacity: { cpuMillis: 64_000, memoryMb },
    agentAddress: '127.0.0.1:1',
  });
  const directoryOf = (hosts: DirectoryHost[]): HostDirectory => ({
    list: async () => hosts,
    get: async (id) => hosts.find((h) => h.id === id)!,
    close: () => undefined,
  });
  const addHosts = async (hosts: DirectoryHost[]) => {
    for (const h of hosts) {
      await db.prisma.host.create({ data: { id: h.id, name: h.name, agentAddress: h.agentAddress, capacity: { ...h.capacity }, drivers: h.drivers } });
    }
  };

  /** One replica: its own pool, its own book. */
  const replica = (prisma: PrismaClient, hosts: DirectoryHost[]) => {
    const store = new WorkloadStore(prisma);
    const placement = new PlacementService({ hosts: directoryOf(hosts), ledger: postgresAllocationLedger(prisma), logger: silentLogger, defaultStrategy: 'bin-pack' });
    const placeOne = async (memoryMb: number) => {
      const id = randomUUID();
      const request: PlacementRequest = { driver: 'process', teamId: null, resources: { vcpus: 0.5, memoryMb } };
      const plan = await placement.place([request], {
        reservationKeys: [id],
        commit: async (tx, p) => {
          await store.create(
            { id, name: 'w', teamId: null, driver: 'process', command: ['/bin/true'], env: {}, resources: { vcpus: 0.5, memoryMb }, routes: [], hostId: p.placements[0].hostId, placementReason: p.placements[0].reason },
            tx,
          );
        },
      });
      return plan.placements.length === 1;
    };
    return { placement, placeOne };
  };

  const liveOn = async (hostId: string) => db.prisma.workload.count({ where: { hostId, state: { in: [...HOLDING_STATES] } } });

  beforeAll(async () => {
    db = await createTestDatabase();
    other = createPrismaClient(db.url, { maxConnections: 5 });
  });
  afterAll(async () => {
    await other?.$disconnect();
    await db?.drop();
  });

  it('two replicas placing concurrently onto a host with room for N never put more than N there', async () => {
    const N = 7;
    const hosts = [host('h-room-7', N * 256)];
    await addHosts(hosts);
    const a = replica(db.prisma, hosts);
    const b = replica(other, hosts);
    const attempts = 20;
    const results = await Promise.all([...Array.from({ length: attempts }, () => a.placeOne(256)), ...Array.from({ length: attempts }, () => b.placeOne(256))]);
    expect(results.filter(Boolean)).toHaveLength(N);
    expect(await liveOn('h-room-7')).toBe(N);
    // Both replicas got some: the lock serialised them, it did not shut one out.
    const rows = await db.prisma.workload.findMany({ where: { hostId: 'h-room-7' }, select: { id: true } });
    expect(rows).toHaveLength(N);
  });

  it('all or nothing: a batch that does not fit whole writes and reserves nothing; replicas placing batches never over-commit', async () => {
    const hosts = [host('h-batch', 5 * 256)];
    await addHosts(hosts);
    const store = new WorkloadStore(db.prisma);
    const placements = [db.prisma, other].map(
      (prisma) => new PlacementService({ hosts: directoryOf(hosts), ledger: postgresAllocationLedger(prisma), logger: silentLogger, defaultStrategy: 'spread' }),
    );
    const placeBatch = async (placement: PlacementService, count: number) => {
      const ids = Array.from({ length: count }, () => randomUUID());
      const requests: PlacementRequest[] = ids.map(() => ({ driver: 'process', teamId: null, resources: { vcpus: 0.5, memoryMb: 256 } }));
      const plan = await placement.place(requests, {
        reservationKeys: ids,
        allOrNothing: true,
        commit: async (tx, p) => {
          for (const pl of p.placements) {
            const id = ids[pl.requestIndex];
            await store.create({ id, name: 'b', teamId: null, driver: 'process', command: ['/bin/true'], env: {}, resources: { vcpus: 0.5, memoryMb: 256 }, routes: [], hostId: pl.hostId, placementReason: pl.reason }, tx);
          }
        },
      });
      return plan.unplaced.length === 0 ? count : 0;
    };
    // Six do not fit on a host with room for five: nothing is written.
    expect(await placeBatch(placements[0], 6)).toBe(0);
    expect(await liveOn('h-batch')).toBe(0);
    // Nor is anything left reserved: the whole room is still there.
    expect(await placeBatch(placements[0], 5)).toBe(5);
    await db.prisma.workload.updateMany({ where: { hostId: 'h-batch' }, data: { state: 'stopped' } });
    // Two replicas deploying batches of two at once: at most five rows, and only whole batches.
    const placed = await Promise.all([...Array.from({ length: 4 }, () => placeBatch(placements[0], 2)), ...Array.from({ length: 4 }, () => placeBatch(placements[1], 2))]);
    const total = placed.reduce((a, b) => a + b, 0);
    expect(total).toBe(4);
    expect(await liveOn('h-batch')).toBe(4);
  });

  it('counts only workloads that hold resources: a stopped one frees its share', async () => {
    const hosts = [host('h-free', 1024)];
    await addHosts(hosts);
    const a = replica(db.prisma, hosts);
    expect(await a.placeOne(1024)).toBe(true);
    expect(await a.placeOne(1)).toBe(false);
    await db.prisma.workload.updateMany({ where: { hostId: 'h-free' }, data: { state: 'stopped' } });
    expect(await a.placeOne(1024)).toBe(true);
  });

  it('says why nothing fits, naming the best candidate, in the error CreateWorkload raises', async () => {
    const hosts = [host('h-small-1', 1024), host('h-small-2', 2048)];
    await addHosts(hosts);
    const store = new WorkloadStore(db.prisma);
    const placement = new PlacementService({ hosts: directoryOf(hosts), ledger: postgresAllocationLedger(db.prisma), logger: silentLogger, defaultStrategy: 'round-robin' });
    const workloads = new WorkloadService(store, directoryOf(hosts), new AgentPool(1000), silentLogger, 10, placement);
    const err = await workloads.create({ teamId: null, name: 'big', driver: 'process', command: ['/bin/true'], resources: { memoryMb: 4096 } }).catch((e: unknown) => e);
    expect(isCorralError(err) && err.code).toBe('FAILED_PRECONDITION');
    expect(err).toMatchObject({ field: 'placement', message: 'no host has 4096 MB free; best candidate h-small-2 has 2048' });
    // Nothing was recorded for it.
    expect(await db.prisma.workload.count({ where: { name: 'big' } })).toBe(0);
  });
});
