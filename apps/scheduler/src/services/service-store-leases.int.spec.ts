import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { ServiceStore } from './service-store';

// Rollout leases against real Postgres: a running rollout untouched for the
// lease is claimed by exactly one of several replicas sweeping at once; one
// that is being touched, or has ended, is claimed by none.

const LEASE_MS = 30_000;

describeWithDatabase('ServiceStore rollout leases', () => {
  let db: TestDatabase;
  let store: ServiceStore;

  beforeAll(async () => {
    db = await createTestDatabase();
    store = new ServiceStore(db.prisma);
  });
  afterAll(async () => {
    await db?.drop();
  });

  const rollout = async (name: string, state: string, touchedMsAgo: number) => {
    const service = await db.prisma.service.create({ data: { name, teamId: null, teamScope: '', state: 'deploying' } });
    const deployment = await db.prisma.deployment.create({ data: { serviceId: service.id, fromVersion: 0, toVersion: 1, state, progress: { stepsTotal: 0, stepsDone: 0, events: [] } } });
    await db.prisma.$executeRaw`UPDATE deployments SET updated_at = now() - make_interval(secs => ${touchedMsAgo / 1000}) WHERE id = ${deployment.id}`;
    return deployment.id;
  };

  it('gives an abandoned rollout to exactly one of the replicas claiming at once, and renews its lease', async () => {
    const abandoned = await rollout('abandoned', 'running', 2 * LEASE_MS);
    const moving = await rollout('moving', 'running', 1000);
    await rollout('ended', 'succeeded', 2 * LEASE_MS);

    const claims = await Promise.all([1, 2, 3, 4].map(() => new ServiceStore(db.prisma).claimAbandonedRollouts(LEASE_MS)));
    const won = claims.flat().map((d) => d.id);
    expect(won).toEqual([abandoned]);
    expect(claims.flat()[0].service.name).toBe('abandoned');
    // Renewed: nobody claims it again until it goes quiet for another lease.
    expect(await store.claimAbandonedRollouts(LEASE_MS)).toEqual([]);
    expect(won).not.toContain(moving);
  });

  it('keeps a touched rollout from being claimed', async () => {
    const id = await rollout('touched', 'running', 2 * LEASE_MS);
    await store.touchRollout(id);
    expect((await store.claimAbandonedRollouts(LEASE_MS)).map((d) => d.id)).not.toContain(id);
  });
});
