// Placement at scale: 1,000 simulated hosts (rows in a throw-away Postgres
// database, served to the scheduler's PlacementService by an in-memory host
// directory, so host-registry's gRPC is not measured) and 10,000 instances.
//
// - decision: the pure planner (`planPlacements`, libs/domain) per request,
//   each request placed on the fleet as the previous ones left it, per
//   strategy: p50/p99 and decisions per second;
// - durable: the scheduler's real path, `PlacementService.place` with
//   `commit` writing the workload row (pending, with its host, and its
//   `scheduled` event) inside the transaction that holds the host's advisory
//   lock and re-checks its allocation, as CreateWorkload does; several
//   replicas (PlacementService instances on their own connection pools)
//   placing at once; placements per second and p50/p99 per placement, and a
//   check that no host ended up over its capacity;
// - baseline, in the same run: the same rows inserted straight into Postgres
//   (WorkloadStore.create, host chosen by index, no placement), with the same
//   concurrency, so a ratio is printed.
//
//   npm run bench:scheduler                       # 1,000 hosts, 10,000 instances, 2 replicas
//   npx tsx bench/scheduler/run.ts --hosts 200 --instances 2000 --no-append
//
// DATABASE_URL selects the server (default postgres://postgres@127.0.0.1:5432/test).
// Appends a section to bench/RESULTS.md beside Nomad's published C1M figure.

import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createPrismaClient, createThrowawayDatabase, type PrismaClient } from '@corral/db';
import { planPlacements, type PlacementHost, type PlacementRequest, type PlacementStrategy } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import type { DirectoryHost, HostDirectory } from '../../apps/scheduler/src/hosts/host-directory';
import { HOLDING_STATES, postgresAllocationLedger } from '../../apps/scheduler/src/placement/allocation-ledger';
import { PlacementService } from '../../apps/scheduler/src/placement/placement-service';
import { WorkloadStore, type NewWorkload } from '../../apps/scheduler/src/workloads/workload-store';
import { machineLine } from '../agent/lib/machine';
import { appendResults } from '../agent/lib/results';
import { formatMs, percentile, ratio } from '../agent/lib/stats';

const REPO = resolve(__dirname, '..', '..');
/** Nomad's C1M (2016): 1,000,000 containers on 5,000 hosts in under 5 minutes. */
const NOMAD_C1M_PLACEMENTS_PER_SECOND = 3750;
const HOST_CAPACITY = { cpuMillis: 32_000, memoryMb: 65_536 };

export const SCHEDULER_DESCRIPTION = [
  '- `bench/scheduler/run.ts` (`npm run bench:scheduler`, `--help`): placement with 1,000',
  '  simulated hosts (rows in a throw-away Postgres database, listed by an in-memory host',
  '  directory) and 10,000 instances of mixed sizes. `decision`: the pure planner',
  '  (`planPlacements`) per request on the fleet as earlier requests left it, per strategy.',
  '  `durable`: the scheduler\'s PlacementService with the workload row written inside the',
  '  per-host advisory-lock transaction that re-checks the allocation (CreateWorkload\'s',
  '  path, without the agent call), several replicas at once, with a check that no host',
  '  is over capacity afterwards. `baseline`: the same rows inserted straight into',
  '  Postgres with the same concurrency (no placement), in the same run; the ratio is',
  "  durable/baseline. Beside Nomad's published C1M figure (≈3,750 placements/s).",
].join('\n');

const USAGE = `npx tsx bench/scheduler/run.ts [options]

  --hosts N          simulated hosts (default 1000)
  --instances N      instances placed (default 10000)
  --replicas N       PlacementService instances (own pools) placing at once (default 2)
  --callers N        concurrent callers per replica (default 4)
  --strategies LIST  durable path's strategies, comma-separated: round-robin, bin-pack, spread,
                     best-of-k (default bin-pack,best-of-k)
  --batch N          also place N instances per call (a component's count) in one transaction,
                     best-of-k (default 10; 1 turns it off)
  --no-append        print only; do not append to bench/RESULTS.md
  -h, --help         this text
`;

interface Options {
  hosts: number;
  instances: number;
  replicas: number;
  callers: number;
  strategies: PlacementStrategy[];
  batch: number;
  append: boolean;
}

function parseArgs(argv: string[]): Options | undefined {
  const o: Options = { hosts: 1000, instances: 10_000, replicas: 2, callers: 4, strategies: ['bin-pack', 'best-of-k'], batch: 10, append: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const count = () => {
      const n = Number(next());
      if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a whole number of at least 1`);
      return n;
    };
    if (a === '-h' || a === '--help') return undefined;
    else if (a === '--hosts') o.hosts = count();
    else if (a === '--instances') o.instances = count();
    else if (a === '--replicas') o.replicas = count();
    else if (a === '--callers') o.callers = count();
    else if (a === '--strategies') o.strategies = next().split(',') as PlacementStrategy[];
    else if (a === '--batch') o.batch = count();
    else if (a === '--no-append') o.append = false;
    else throw new Error(`unknown option ${a}\n\n${USAGE}`);
  }
  for (const s of o.strategies) if (!['round-robin', 'bin-pack', 'spread', 'best-of-k'].includes(s)) throw new Error(`unknown strategy ${s}`);
  return o;
}

/** A deterministic pseudo-random sequence (mulberry32), so every run places the same mix. */
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

const SIZES = [
  { vcpus: 0.25, memoryMb: 256 },
  { vcpus: 0.5, memoryMb: 512 },
  { vcpus: 1, memoryMb: 1024 },
  { vcpus: 2, memoryMb: 4096 },
];

/** The instances: mixed sizes, in groups of ten (a component each, for spread). */
function instances(n: number): PlacementRequest[] {
  const random = seeded(42);
  return Array.from({ length: n }, (_, i) => ({ driver: 'process', teamId: null, resources: SIZES[Math.floor(random() * SIZES.length)], group: `svc-${Math.floor(i / 10)}` }));
}

function fleet(n: number): DirectoryHost[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `bench-host-${String(i).padStart(5, '0')}`,
    name: `bench-${i}`,
    status: 'online' as const,
    teamId: null,
    drivers: [{ name: 'process', healthy: true }],
    capacity: { ...HOST_CAPACITY },
    labels: { zone: `z${i % 3}` },
    agentAddress: '127.0.0.1:1',
  }));
}

interface DecisionResult {
  strategy: PlacementStrategy;
  samples: number[];
  unplaced: number;
}

/** Each request planned alone on the fleet as the previous ones left it (what one CreateWorkload asks for). */
function measureDecisions(hosts: PlacementHost[], requests: PlacementRequest[], strategy: PlacementStrategy): DecisionResult {
  let working = hosts;
  let cursor = 0;
  let unplaced = 0;
  const random = seeded(7);
  const existing: { hostId: string; group: string }[] = [];
  const samples: number[] = [];
  for (const request of requests) {
    const start = performance.now();
    const plan = planPlacements(working, [request], { strategy, cursor, random, ...(strategy === 'spread' ? { existing: existing.filter((e) => e.group === request.group) } : {}) });
    samples.push(performance.now() - start);
    working = plan.hosts;
    cursor = plan.nextCursor;
    if (plan.placements.length === 0) unplaced++;
    else existing.push({ hostId: plan.placements[0].hostId, group: request.group ?? '' });
  }
  return { strategy, samples, unplaced };
}

interface PathResult {
  placed: number;
  unplaced: number;
  seconds: number;
  samples: number[];
}

/** Sub-millisecond decisions need µs. */
const formatFine = (ms: number) => (Number.isFinite(ms) && ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : formatMs(ms));

const row = (w: { id: string; hostId: string; request: PlacementRequest; reason: string }): NewWorkload => ({
  id: w.id,
  name: `bench-${w.id.slice(0, 8)}`,
  teamId: null,
  driver: 'process',
  command: ['/bin/sleep', '300'],
  env: {},
  resources: w.request.resources,
  routes: [],
  hostId: w.hostId,
  placementReason: w.reason,
});

/** Runs `work(i)` for i in 0..n-1 over `lanes` lanes (lane k takes i ≡ k), timing each; `work` answers whether it placed, or how many. */
async function lanes(n: number, laneCount: number, work: (i: number, lane: number) => Promise<boolean | number>): Promise<PathResult> {
  const samples: number[] = [];
  let placed = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: laneCount }, async (_, lane) => {
      for (let i = lane; i < n; i += laneCount) {
        const t = performance.now();
        const done = await work(i, lane);
        placed += typeof done === 'number' ? done : done ? 1 : 0;
        samples.push(performance.now() - t);
      }
    }),
  );
  return { placed, unplaced: Math.max(0, n - placed), seconds: (performance.now() - start) / 1000, samples };
}

async function clearWorkloads(prisma: PrismaClient) {
  await prisma.workloadEvent.deleteMany({});
  await prisma.workload.deleteMany({});
  await prisma.$executeRawUnsafe('VACUUM ANALYZE workloads');
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  if (!options) {
    console.log(USAGE);
    return;
  }
  process.env.DATABASE_URL ??= 'postgres://postgres@127.0.0.1:5432/test';
  const hosts = fleet(options.hosts);
  const requests = instances(options.instances);

  console.log(`decision: planPlacements per request, ${options.hosts} hosts, ${options.instances} requests`);
  const strategies: PlacementStrategy[] = ['round-robin', 'bin-pack', 'spread', 'best-of-k'];
  // One untimed pass warms the JIT.
  measureDecisions(hosts, requests.slice(0, 500), 'bin-pack');
  const decisions = strategies.map((s) => {
    const r = measureDecisions(hosts, requests, s);
    console.log(`  ${s}: p50 ${formatFine(percentile(r.samples, 50))}, p99 ${formatFine(percentile(r.samples, 99))}, unplaced ${r.unplaced}`);
    return r;
  });

  const database = await createThrowawayDatabase();
  const laneCount = options.replicas * options.callers;
  const clients = Array.from({ length: options.replicas }, () => createPrismaClient(database.url, { maxConnections: options.callers + 1 }));
  let baseline: PathResult;
  const durable: { strategy: PlacementStrategy; result: PathResult; overCommitted: number }[] = [];
  let batched: { strategy: PlacementStrategy; result: PathResult; overCommitted: number } | undefined;
  try {
    const prisma = clients[0];
    for (const h of hosts) {
      await prisma.host.create({ data: { id: h.id, name: h.name, agentAddress: h.agentAddress, capacity: { ...h.capacity }, drivers: h.drivers, labels: h.labels } });
    }
    const directory: HostDirectory = { list: async () => hosts, get: async (id) => hosts.find((h) => h.id === id) ?? hosts[0], close: () => undefined };

    console.log(`baseline: ${options.instances} rows inserted directly, ${laneCount} at a time`);
    const stores = clients.map((c) => new WorkloadStore(c));
    baseline = await lanes(options.instances, laneCount, async (i, lane) => {
      await stores[lane % options.replicas].create(row({ id: randomUUID(), hostId: hosts[i % hosts.length].id, request: requests[i], reason: 'baseline' }));
      return true;
    });
    console.log(`  ${(baseline.placed / baseline.seconds).toFixed(0)} rows/s`);

    for (const strategy of options.strategies) {
      await clearWorkloads(prisma);
      console.log(`durable: PlacementService (${strategy}) with the row written under the host lock, ${options.replicas} replicas × ${options.callers} callers`);
      const replicas = clients.map(
        (c) => new PlacementService({ hosts: directory, ledger: postgresAllocationLedger(c), logger: silentLogger, defaultStrategy: strategy, random: seeded(11) }),
      );
      const result = await lanes(options.instances, laneCount, async (i, lane) => {
        const r = lane % options.replicas;
        const id = randomUUID();
        const plan = await replicas[r].place([requests[i]], {
          reservationKeys: [id],
          commit: async (tx, p) => {
            await stores[r].create(row({ id, hostId: p.placements[0].hostId, request: requests[i], reason: p.placements[0].reason }), tx);
          },
        });
        return plan.placements.length === 1;
      });
      console.log(`  ${(result.placed / result.seconds).toFixed(0)} placements/s, ${result.unplaced} unplaced`);
      const over = await prisma.$queryRawUnsafe<Array<{ n: bigint }>>(
        `SELECT count(*)::bigint AS n FROM (
           SELECT host_id, SUM(COALESCE((resources->>'memoryMb')::numeric, 0)) AS mem, SUM(COALESCE((resources->>'vcpus')::numeric, 0) * 1000) AS cpu
             FROM workloads WHERE state = ANY($1::text[]) GROUP BY host_id
         ) a WHERE mem > $2 OR cpu > $3`,
        [...HOLDING_STATES],
        HOST_CAPACITY.memoryMb,
        HOST_CAPACITY.cpuMillis,
      );
      durable.push({ strategy, result, overCommitted: Number(over[0].n) });
    }

    if (options.batch > 1) {
      // A deploy places a component's instances in one call: one plan, one transaction holding
      // the chosen hosts' locks, every row written in it.
      await clearWorkloads(prisma);
      const strategy: PlacementStrategy = 'best-of-k';
      console.log(`durable, ${options.batch} instances per call (a component's count): PlacementService (${strategy}), ${options.replicas} replicas × ${options.callers} callers`);
      const replicas = clients.map(
        (c) => new PlacementService({ hosts: directory, ledger: postgresAllocationLedger(c), logger: silentLogger, defaultStrategy: strategy, random: seeded(13) }),
      );
      const calls = Math.ceil(options.instances / options.batch);
      const result = await lanes(calls, laneCount, async (call, lane) => {
        const r = lane % options.replicas;
        const batch = requests.slice(call * options.batch, (call + 1) * options.batch);
        const ids = batch.map(() => randomUUID());
        const plan = await replicas[r].place(batch, {
          reservationKeys: ids,
          commit: async (tx, p) => {
            for (const placement of p.placements) {
              const i = placement.requestIndex;
              await stores[r].create(row({ id: ids[i], hostId: placement.hostId, request: batch[i], reason: placement.reason }), tx);
            }
          },
        });
        return plan.placements.length;
      });
      console.log(`  ${(result.placed / result.seconds).toFixed(0)} placements/s`);
      const over = await prisma.$queryRawUnsafe<Array<{ n: bigint }>>(
        `SELECT count(*)::bigint AS n FROM (
           SELECT host_id, SUM(COALESCE((resources->>'memoryMb')::numeric, 0)) AS mem, SUM(COALESCE((resources->>'vcpus')::numeric, 0) * 1000) AS cpu
             FROM workloads WHERE state = ANY($1::text[]) GROUP BY host_id
         ) a WHERE mem > $2 OR cpu > $3`,
        [...HOLDING_STATES],
        HOST_CAPACITY.memoryMb,
        HOST_CAPACITY.cpuMillis,
      );
      batched = { strategy, result, overCommitted: Number(over[0].n) };
    }
  } finally {
    for (const c of clients) await c.$disconnect();
    await database.drop();
  }

  const rate = (r: PathResult) => r.placed / r.seconds;
  const machine = await machineLine(REPO, []);
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  const section = [
    `## scheduler-bench — ${new Date().toISOString()}`,
    '',
    `${machine}; Postgres at ${new URL(process.env.DATABASE_URL).host}. Run \`npx tsx bench/scheduler/run.ts ${process.argv.slice(2).join(' ')}\`. ${options.hosts.toLocaleString('en-US')} hosts of ${HOST_CAPACITY.cpuMillis / 1000} vCPUs / ${HOST_CAPACITY.memoryMb} MB, ${options.instances.toLocaleString('en-US')} instances (0.25–2 vCPUs, 256–4096 MB, groups of 10 for spread).`,
    '',
    '| path | strategy | concurrency | placed | per second | p50 | p99 |',
    '|---|---|---:|---:|---:|---:|---:|',
    ...decisions.map(
      (d) => `| decision (pure planPlacements, one request) | ${d.strategy} | 1 | ${fmt(d.samples.length - d.unplaced)} | ${fmt(1000 / (d.samples.reduce((a, b) => a + b, 0) / d.samples.length))} | ${formatFine(percentile(d.samples, 50))} | ${formatFine(percentile(d.samples, 99))} |`,
    ),
    ...durable.map(
      ({ strategy, result }) =>
        `| durable (PlacementService + row under host lock) | ${strategy} | ${options.replicas} replicas × ${options.callers} | ${fmt(result.placed)} | ${fmt(rate(result))} | ${formatMs(percentile(result.samples, 50))} | ${formatMs(percentile(result.samples, 99))} |`,
    ),
    ...(batched
      ? [
          `| durable, ${options.batch} instances per call (one transaction) | ${batched.strategy} | ${options.replicas} replicas × ${options.callers} | ${fmt(batched.result.placed)} | ${fmt(rate(batched.result))} | ${formatMs(percentile(batched.result.samples, 50))} per call | ${formatMs(percentile(batched.result.samples, 99))} per call |`,
        ]
      : []),
    `| baseline (same rows, direct insert, no placement) | – | ${laneCount} | ${fmt(baseline.placed)} | ${fmt(rate(baseline))} | ${formatMs(percentile(baseline.samples, 50))} | ${formatMs(percentile(baseline.samples, 99))} |`,
    '',
    `Durable/baseline placements per second: ${durable.map((d) => `${d.strategy} ${ratio(rate(d.result), rate(baseline))}`).join(', ')}; hosts over capacity afterwards: ${[...durable, ...(batched ? [batched] : [])].map((d) => `${d.strategy} ${d.overCommitted}`).join(', ')}${batched ? `; batched (${options.batch} per call)/baseline ${ratio(rate(batched.result), rate(baseline))}` : ''}. ` +
      "bin-pack sends every replica's next placement to the same fullest host, so their writes queue on that host's lock; best-of-k spreads them over sampled hosts and the locks rarely meet. " +
      `Nomad's published C1M (2016): 1,000,000 containers on 5,000 hosts in under 5 minutes, ≈${NOMAD_C1M_PLACEMENTS_PER_SECOND.toLocaleString('en-US')} placements/s on a cluster of servers; ` +
      "this is one machine with 2 cores shared with Postgres, and both replicas and the baseline run in this one process, where Prisma's query engine shares the JavaScript thread: a durable placement is six round trips (begin, lock, re-read, two inserts, commit) to the baseline's four, plus its plan. Per-placement latency includes the wait for this replica's earlier callers' plan-and-reserve steps (serialised within a replica; the locked writes overlap). " +
      "The durable path reuses each replica's last full read of the hosts' allocations for up to 1 s (its own commits added as they land; another replica's are caught by the re-check under the host lock, and then it plans again); every placement still re-reads its host's allocation under the lock.",
  ].join('\n');
  console.log(`\n${section}\n`);
  if (options.append) appendResults(section, [SCHEDULER_DESCRIPTION]);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
