import fc from 'fast-check';
import { HOST_STATUSES } from '../lifecycle/instance-state';
import { InvalidArgumentError } from '../errors/errors';
import {
  Reservations,
  explainNoFit,
  infeasibility,
  placeRoundRobin,
  planPlacements,
  type PlacementHost,
  type PlacementRequest,
  type PlanOptions,
} from './placement';

const driverName = fc.constantFrom('process', 'podman', 'qemu');
const teamId = fc.option(fc.constantFrom('team-a', 'team-b'), { nil: null });
const host: fc.Arbitrary<PlacementHost> = fc.record({
  id: fc.uuid(),
  name: fc.string({ minLength: 1, maxLength: 8 }),
  status: fc.constantFrom(...HOST_STATUSES),
  teamId,
  drivers: fc.uniqueArray(fc.record({ name: driverName, healthy: fc.boolean() }), { selector: (d) => d.name, maxLength: 3 }),
});
const hosts = fc.uniqueArray(host, { selector: (h) => h.id, maxLength: 12 });
const request: fc.Arbitrary<PlacementRequest> = fc.record({ driver: driverName, teamId });

describe('placeRoundRobin', () => {
  it('only ever places on a feasible host', () => {
    fc.assert(
      fc.property(hosts, request, fc.nat(1000), (hs, req, cursor) => {
        const decision = placeRoundRobin(hs, req, cursor);
        if (decision.placed) {
          const chosen = hs.find((h) => h.id === decision.hostId);
          expect(chosen).toBeDefined();
          expect(infeasibility(chosen!, req)).toBeUndefined();
        } else {
          expect(hs.every((h) => infeasibility(h, req) !== undefined)).toBe(true);
        }
      }),
    );
  });

  it('visits every feasible host once per round, whatever the input order', () => {
    fc.assert(
      fc.property(hosts, request, fc.nat(1000), (hs, req, start) => {
        const feasible = hs.filter((h) => infeasibility(h, req) === undefined);
        const shuffled = [...hs].reverse();
        let cursor = start;
        const chosen: string[] = [];
        for (let i = 0; i < feasible.length; i++) {
          const d = placeRoundRobin(i % 2 ? hs : shuffled, req, cursor);
          if (!d.placed) throw new Error('feasible host not placed');
          chosen.push(d.hostId);
          cursor = d.nextCursor;
        }
        expect(new Set(chosen).size).toBe(feasible.length);
      }),
    );
  });

  it("never puts a team's workload on another team's host", () => {
    fc.assert(
      fc.property(hosts, request, fc.nat(), (hs, req, cursor) => {
        const d = placeRoundRobin(hs, req, cursor);
        if (d.placed) {
          const owner = hs.find((h) => h.id === d.hostId)!.teamId;
          expect(owner === null || owner === req.teamId).toBe(true);
        }
      }),
    );
  });

  it('explains why nothing fits', () => {
    const hs: PlacementHost[] = [
      { id: 'a', name: 'a', status: 'unreachable', teamId: null, drivers: [{ name: 'process', healthy: true }] },
      { id: 'b', name: 'b', status: 'online', teamId: null, drivers: [{ name: 'podman', healthy: true }] },
      { id: 'c', name: 'c', status: 'online', teamId: 'team-b', drivers: [{ name: 'process', healthy: true }] },
    ];
    const d = placeRoundRobin(hs, { driver: 'process', teamId: 'team-a' }, 0);
    expect(d).toEqual({
      placed: false,
      nextCursor: 0,
      reason: 'no online host can run driver "process" (3 hosts: 1 not online, 1 without the driver, 1 another team\'s)',
    });
    expect(explainNoFit([], { driver: 'process', teamId: null })).toBe('no hosts are registered');
  });
});

// ---------------------------------------------------------------------------
// Resource-aware plans

const mk = (id: string, over: Partial<PlacementHost> = {}): PlacementHost => ({
  id,
  name: id,
  status: 'online',
  teamId: null,
  drivers: [{ name: 'podman', healthy: true }],
  capacity: { cpuMillis: 4000, memoryMb: 8192 },
  allocated: { cpuMillis: 0, memoryMb: 0 },
  labels: {},
  ...over,
});
const need = (memoryMb: number, vcpus = 1, over: Partial<PlacementRequest> = {}): PlacementRequest => ({ driver: 'podman', teamId: null, resources: { vcpus, memoryMb }, ...over });

/** A seeded PRNG (mulberry32), so best-of-k is reproducible in tests. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('explainNoFit', () => {
  it('names the best candidate when memory is short', () => {
    const hs = [
      mk('h-1', { allocated: { cpuMillis: 0, memoryMb: 7168 } }),
      mk('h-2', { status: 'draining' }),
      mk('h-3', { allocated: { cpuMillis: 0, memoryMb: 6144 } }),
    ];
    expect(explainNoFit(hs, need(4096))).toBe('no host has 4096 MB free; best candidate h-3 has 2048');
    expect(planPlacements(hs, [need(4096)], { strategy: 'bin-pack' }).unplaced).toEqual([{ requestIndex: 0, reason: 'no host has 4096 MB free; best candidate h-3 has 2048' }]);
  });

  it('explains CPU, both dimensions, labels, pins and teams', () => {
    expect(explainNoFit([mk('h-1', { allocated: { cpuMillis: 3500, memoryMb: 0 } })], need(128, 2))).toBe('no host has 2 vCPUs free; best candidate h-1 has 0.5 vCPUs');
    expect(
      explainNoFit(
        [mk('a', { allocated: { cpuMillis: 3500, memoryMb: 0 } }), mk('b', { allocated: { cpuMillis: 0, memoryMb: 8000 } })],
        need(1024, 2),
      ),
    ).toBe('no host has both 2 vCPUs and 1024 MB free; best candidates: a (0.5 vCPUs, 8192 MB), b (4 vCPUs, 192 MB)');
    expect(explainNoFit([mk('a', { labels: { zone: 'us' } }), mk('b')], need(1, 1, { labels: { zone: 'eu' } }))).toBe(
      'no host matches labels zone=eu (2 can run driver "podman": a has zone=us, b has no zone)',
    );
    expect(explainNoFit([mk('a', { status: 'unreachable' }), mk('b')], need(1, 1, { hostPin: 'a' }))).toBe('pinned host a is unreachable');
    expect(explainNoFit([mk('a')], need(1, 1, { hostPin: 'zz' }))).toBe('pinned host "zz" is not registered');
    expect(explainNoFit([mk('a', { allocated: { cpuMillis: 0, memoryMb: 8000 } })], need(1024, 1, { hostPin: 'a' }))).toBe('pinned host a has 192 MB free; 1024 MB needed');
    expect(explainNoFit([mk('a'), mk('b', { teamId: 'team-b' })], need(1, 1, { teamId: 'team-a', hostTeamId: 'team-a' }))).toBe(
      'no online host can run driver "podman" (2 hosts: 1 not the team\'s own, 1 another team\'s)',
    );
    expect(explainNoFit([mk('a', { capacity: undefined })], need(1))).toBe('no host reports its capacity (1 otherwise suitable)');
  });
});

describe('planPlacements', () => {
  it('bin-packs onto the fullest host that still fits', () => {
    const hs = [mk('a', { allocated: { cpuMillis: 1000, memoryMb: 2048 } }), mk('b', { allocated: { cpuMillis: 3000, memoryMb: 6144 } }), mk('c')];
    const plan = planPlacements(hs, [need(1024, 0.5), need(1024, 0.5), need(1024, 0.5)], { strategy: 'bin-pack' });
    expect(plan.placements.map((p) => p.hostId)).toEqual(['b', 'b', 'a']);
    expect(plan.placements[0].reason).toMatch(/^bin-pack: b is the fullest fit \(score [\d.]+; 7168\/8192 MB after placing\) of 3 feasible hosts$/);
    expect(plan.hosts.find((h) => h.id === 'b')!.allocated).toEqual({ cpuMillis: 4000, memoryMb: 8192 });
    // The input is not modified.
    expect(hs[1].allocated).toEqual({ cpuMillis: 3000, memoryMb: 6144 });
  });

  it('spreads across label values, then hosts, continuing existing instances', () => {
    const hs = [mk('a1', { labels: { zone: 'a' } }), mk('a2', { labels: { zone: 'a' } }), mk('b1', { labels: { zone: 'b' } }), mk('c1', { labels: { zone: 'c' } })];
    const req = need(256, 1, { spreadBy: 'zone', group: 'shop/api' });
    const plan = planPlacements(hs, [req, req, req, req], { strategy: 'spread', existing: [{ hostId: 'c1', group: 'shop/api' }, { hostId: 'c1', group: 'other' }] });
    expect(plan.placements.map((p) => p.hostId)).toEqual(['a1', 'b1', 'a2', 'c1']);
    expect(plan.placements[0].reason).toBe("spread by zone: zone=a had 0 of the group's instances, the fewest of 3 feasible values (a1 had 0)");
  });

  it('needs a random() for best-of-k and samples with it', () => {
    expect(() => planPlacements([mk('a')], [need(1)], { strategy: 'best-of-k' })).toThrow(InvalidArgumentError);
    const hs = Array.from({ length: 50 }, (_, i) => mk(`h-${String(i).padStart(2, '0')}`, { allocated: { cpuMillis: 0, memoryMb: (i % 8) * 1024 } }));
    const plan = planPlacements(hs, [need(512)], { strategy: 'best-of-k', k: 3, random: seeded(7) });
    expect(plan.placements).toHaveLength(1);
    expect(plan.placements[0].reason).toMatch(/^best-of-3: h-\d+ scored [\d.]+ over h-\d+ [\d.]+, h-\d+ [\d.]+ \(3 feasible of 3 sampled from 50 hosts\)$/);
  });

  it('keeps round-robin order across plans with the cursor', () => {
    const hs = [mk('c'), mk('a'), mk('b')];
    const first = planPlacements(hs, [need(1), need(1)], { strategy: 'round-robin', cursor: 0 });
    const second = planPlacements(first.hosts, [need(1), need(1)], { strategy: 'round-robin', cursor: first.nextCursor });
    expect([...first.placements, ...second.placements].map((p) => p.hostId)).toEqual(['a', 'b', 'c', 'a']);
    expect(second.nextCursor).toBe(4);
  });
});

describe('Reservations', () => {
  it('keeps concurrent plans from over-committing a host', () => {
    const hosts = [mk('a', { capacity: { cpuMillis: 4000, memoryMb: 4096 } })];
    const reqs = [need(3072)];
    // Two deploys plan against the same reported state; the second sees the first's reservation.
    const planA = planPlacements(Reservations.apply(hosts, []), reqs, { strategy: 'bin-pack' });
    let held = Reservations.add([], Reservations.fromPlan(planA, reqs, (i) => `deploy-a/${i}`));
    const planB = planPlacements(Reservations.apply(hosts, held), reqs, { strategy: 'bin-pack' });
    expect(planA.placements).toHaveLength(1);
    expect(planB.placements).toHaveLength(0);
    expect(planB.unplaced[0].reason).toBe('no host has 3072 MB free; best candidate a has 1024');
    expect(held).toEqual([{ key: 'deploy-a/0', hostId: 'a', cpuMillis: 1000, memoryMb: 3072 }]);
    // Once the host reports the instance, the reservation goes.
    held = Reservations.release(held, ['deploy-a/0']);
    expect(Reservations.apply(hosts, held)).toEqual(hosts);
    expect(Reservations.totals(Reservations.add(held, [{ key: 'x', hostId: 'a', cpuMillis: 1, memoryMb: 2 }, { key: 'y', hostId: 'a', cpuMillis: 1, memoryMb: 2 }]))).toEqual(
      new Map([['a', { cpuMillis: 2, memoryMb: 4 }]]),
    );
  });
});

// Properties over random fleets and requests.
const hostIds = ['h-0', 'h-1', 'h-2', 'h-3', 'h-4', 'h-5', 'h-6', 'h-7'];
const resourcesHost: fc.Arbitrary<PlacementHost> = fc
  .record({
    id: fc.constantFrom(...hostIds),
    status: fc.constantFrom<PlacementHost['status']>('online', 'online', 'online', 'online', 'draining', 'unreachable'),
    teamId: fc.constantFrom<string | null>(null, null, null, 'team-a', 'team-b'),
    drivers: fc.constantFrom(
      [{ name: 'podman', healthy: true }],
      [{ name: 'podman', healthy: true }, { name: 'qemu', healthy: true }],
      [{ name: 'podman', healthy: true }, { name: 'qemu', healthy: true }],
      [{ name: 'qemu', healthy: false }],
    ),
    capacity: fc.option(fc.record({ cpuMillis: fc.integer({ min: 0, max: 8 }).map((n) => n * 1000), memoryMb: fc.integer({ min: 0, max: 16 }).map((n) => n * 1024) }), {
      nil: undefined,
      freq: 8,
    }),
    // Mostly below capacity; sometimes above (a host over-committed from outside).
    used: fc.record({ cpu: fc.double({ min: 0, max: 1.2, noNaN: true }), memory: fc.double({ min: 0, max: 1.2, noNaN: true }) }),
    labels: fc.record({ zone: fc.constantFrom('a', 'b', 'c'), gpu: fc.constantFrom('yes') }, { requiredKeys: [] }),
  })
  .map(({ used, ...h }) => ({
    ...h,
    drivers: (h.drivers as readonly { name: string; healthy: boolean }[]).map((d) => ({ ...d })),
    name: h.id,
    allocated: h.capacity ? { cpuMillis: Math.round(h.capacity.cpuMillis * used.cpu), memoryMb: Math.round(h.capacity.memoryMb * used.memory) } : undefined,
  }));
const fleet = fc.uniqueArray(resourcesHost, { selector: (h) => h.id, minLength: 1, maxLength: 8 });
/** `arb` in `present` of every `outOf` draws, else undefined. */
const sometimes = <T>(arb: fc.Arbitrary<T>, present: number, outOf: number) =>
  fc.oneof({ arbitrary: arb, weight: present }, { arbitrary: fc.constant(undefined), weight: outOf - present });
const resourcesRequest: fc.Arbitrary<PlacementRequest> = fc
  .record({
    driver: fc.constantFrom('podman', 'podman', 'podman', 'qemu'),
    teamId: fc.constantFrom<string | null>(null, null, 'team-a'),
    resources: sometimes(fc.record({ vcpus: fc.constantFrom(0, 0.5, 1, 2, 4), memoryMb: fc.constantFrom(0, 128, 512, 1024, 4096, 8192) }), 4, 5),
    labels: sometimes(fc.record({ zone: fc.constantFrom('a', 'b') }), 1, 5),
    hostPin: sometimes(fc.constantFrom(...hostIds), 1, 10),
    hostTeamId: sometimes(fc.constant('team-a'), 1, 10),
    spreadBy: sometimes(fc.constantFrom('zone', 'gpu'), 1, 2),
    group: sometimes(fc.constantFrom('g1', 'g2'), 1, 2),
  })
  .map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as unknown as PlacementRequest);
const strategy = fc.constantFrom<PlanOptions['strategy']>('round-robin', 'bin-pack', 'spread', 'best-of-k');
const planInput = fc.record({
  hosts: fleet,
  requests: fc.array(resourcesRequest, { maxLength: 12 }),
  strategy,
  k: fc.integer({ min: 1, max: 4 }),
  seed: fc.integer(),
  cursor: fc.nat(100),
  existing: fc.array(fc.record({ hostId: fc.constantFrom(...hostIds), group: fc.constantFrom('g1', 'g2') }), { maxLength: 4 }),
});
const optionsOf = (input: { strategy: PlanOptions['strategy']; k: number; seed: number; cursor: number; existing: PlanOptions['existing'] }): PlanOptions => ({
  strategy: input.strategy,
  k: input.k,
  random: seeded(input.seed),
  cursor: input.cursor,
  existing: input.existing,
});

const addTo = (h: PlacementHost, r: PlacementRequest): PlacementHost =>
  r.resources && h.capacity
    ? { ...h, allocated: { cpuMillis: (h.allocated?.cpuMillis ?? 0) + Math.round(r.resources.vcpus * 1000), memoryMb: (h.allocated?.memoryMb ?? 0) + r.resources.memoryMb } }
    : h;

describe('planPlacements properties', () => {
  it('never commits a host beyond capacity − allocated, for every strategy', () => {
    fc.assert(
      fc.property(planInput, (input) => {
        const plan = planPlacements(input.hosts, input.requests, optionsOf(input));
        for (const h of input.hosts) {
          const mine = plan.placements.filter((p) => p.hostId === h.id).map((p) => input.requests[p.requestIndex].resources);
          const cpu = mine.reduce((s, r) => s + (r ? Math.round(r.vcpus * 1000) : 0), 0);
          const memory = mine.reduce((s, r) => s + (r?.memoryMb ?? 0), 0);
          if (mine.some((r) => r !== undefined)) {
            expect(h.capacity).toBeDefined();
            expect(cpu).toBeLessThanOrEqual(h.capacity!.cpuMillis - (h.allocated?.cpuMillis ?? 0));
            expect(memory).toBeLessThanOrEqual(h.capacity!.memoryMb - (h.allocated?.memoryMb ?? 0));
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('places each request on a host feasible at that point, and leaves it unplaced only when none was', () => {
    fc.assert(
      fc.property(planInput, (input) => {
        const plan = planPlacements(input.hosts, input.requests, optionsOf(input));
        expect(plan.placements.length + plan.unplaced.length).toBe(input.requests.length);
        let state = input.hosts.map((h) => ({ ...h }));
        input.requests.forEach((req, i) => {
          const placed = plan.placements.find((p) => p.requestIndex === i);
          if (placed) {
            const host = state.find((h) => h.id === placed.hostId)!;
            expect(infeasibility(host, req)).toBeUndefined();
            state = state.map((h) => (h.id === host.id ? addTo(h, req) : h));
          } else {
            expect(plan.unplaced.find((u) => u.requestIndex === i)!.reason.length).toBeGreaterThan(0);
            expect(state.every((h) => infeasibility(h, req) !== undefined)).toBe(true);
          }
        });
        // The returned hosts are that final state.
        expect(plan.hosts.map((h) => h.allocated)).toEqual(state.map((h) => (h.capacity ? { cpuMillis: h.allocated?.cpuMillis ?? 0, memoryMb: h.allocated?.memoryMb ?? 0 } : h.allocated)));
      }),
      { numRuns: 300 },
    );
  });

  it('spread never chooses a label value with more of the group while one with fewer is feasible', () => {
    fc.assert(
      fc.property(planInput, (input) => {
        const plan = planPlacements(input.hosts, input.requests, { ...optionsOf(input), strategy: 'spread' });
        let state = input.hosts.map((h) => ({ ...h }));
        const counts = new Map<string, number>(); // `${hostId}\0${group}`
        for (const e of input.existing) counts.set(`${e.hostId}\0${e.group}`, (counts.get(`${e.hostId}\0${e.group}`) ?? 0) + 1);
        input.requests.forEach((req, i) => {
          const placed = plan.placements.find((p) => p.requestIndex === i);
          if (!placed) return;
          const group = req.group ?? '';
          const valueOf = (h: PlacementHost) => (req.spreadBy === undefined ? h.id : (h.labels?.[req.spreadBy] ?? '(none)'));
          const perValue = new Map<string, number>();
          for (const h of state) perValue.set(valueOf(h), (perValue.get(valueOf(h)) ?? 0) + (counts.get(`${h.id}\0${group}`) ?? 0));
          const chosen = state.find((h) => h.id === placed.hostId)!;
          const feasibleValues = state.filter((h) => infeasibility(h, req) === undefined).map((h) => perValue.get(valueOf(h))!);
          expect(perValue.get(valueOf(chosen))).toBe(Math.min(...feasibleValues));
          counts.set(`${chosen.id}\0${group}`, (counts.get(`${chosen.id}\0${group}`) ?? 0) + 1);
          state = state.map((h) => (h.id === chosen.id ? addTo(h, req) : h));
        });
      }),
      { numRuns: 300 },
    );
  });

  it('is deterministic for a fixed random, whatever the order of the hosts', () => {
    fc.assert(
      fc.property(planInput, (input) => {
        const a = planPlacements(input.hosts, input.requests, optionsOf(input));
        const b = planPlacements([...input.hosts].reverse(), input.requests, optionsOf(input));
        expect(b.placements).toEqual(a.placements);
        expect(b.unplaced).toEqual(a.unplaced);
        expect(b.nextCursor).toBe(a.nextCursor);
      }),
      { numRuns: 200 },
    );
  });

  it('round-robin visits each feasible host once per round', () => {
    fc.assert(
      fc.property(fleet, fc.nat(100), fc.constantFrom('podman', 'qemu'), (hs, cursor, driver) => {
        const req: PlacementRequest = { driver, teamId: null };
        const feasible = hs.filter((h) => infeasibility(h, req) === undefined);
        const plan = planPlacements(hs, feasible.map(() => req), { strategy: 'round-robin', cursor });
        expect(new Set(plan.placements.map((p) => p.hostId)).size).toBe(feasible.length);
        expect(plan.nextCursor).toBe(cursor + feasible.length);
        // The same choices as placing one at a time with placeRoundRobin.
        let c = cursor;
        for (const p of plan.placements) {
          const d = placeRoundRobin(hs, req, c);
          expect(d.placed && d.hostId).toBe(p.hostId);
          c = d.nextCursor;
        }
      }),
    );
  });

  it('best-of-k with k ≥ the fleet is bin-pack', () => {
    fc.assert(
      fc.property(planInput, (input) => {
        const bin = planPlacements(input.hosts, input.requests, { strategy: 'bin-pack' });
        const best = planPlacements(input.hosts, input.requests, { strategy: 'best-of-k', k: 8, random: seeded(input.seed) });
        expect(best.placements.map((p) => [p.hostId, p.score])).toEqual(bin.placements.map((p) => [p.hostId, p.score]));
      }),
      { numRuns: 200 },
    );
  });
});
