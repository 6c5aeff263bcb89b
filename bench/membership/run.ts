// Fleet membership at scale: N simulated hosts (this process) heartbeat at
// 1 Hz over a real nats-server (started here on a free 127.0.0.1 port, so no
// other run's replicas share the queue group) to a real host-registry
// (a separate process) on the real Postgres. Per run it reports
// host-registry's CPU share, its heartbeat processing latency (receipt →
// stored, from GetFleetHealth), whether storage keeps up with what was sent,
// and the detection latency of hosts that stop (last heartbeat sent → the
// HostStatusChanged "unreachable" event), next to Nomad's default.
//
//   npx tsx bench/membership/run.ts                       # 1,000 and 10,000 hosts, batched and direct
//   npx tsx bench/membership/run.ts --hosts 1000 --modes batched --seconds 15 --no-append
//
// DATABASE_URL selects the server (default postgres://postgres@127.0.0.1:5432/test);
// every run gets a throw-away database. Appends a section to bench/RESULTS.md.

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomUUID } from 'node:crypto';
import { createPrismaClient, createThrowawayDatabase } from '@corral/db';
import { connectEventBus, Topics, type EventBus } from '@corral/events';
import { resolveProgram, spawnSupervised, type SupervisedProcess } from '@corral/exec';
import { createClient, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { HostHeartbeat, HostStatus, InstanceState, hostRegistryV1 } from '@corral/proto';
import { freePort } from '@corral/testing';
import { machineLine } from '../agent/lib/machine';
import { appendResults } from '../agent/lib/results';
import { percentile } from '../agent/lib/stats';

const REPO = resolve(__dirname, '..', '..');
const INTERVAL_MS = 1000;
// host-registry's default (MISSED_HEARTBEATS_BEFORE_UNREACHABLE).
const MISSED = 2;
const TICK_MS = 10;
const SLOTS = INTERVAL_MS / TICK_MS;
const CLK_TCK = 100;

export const MEMBERSHIP_DESCRIPTION = [
  '- `bench/membership/run.ts` (`npx tsx bench/membership/run.ts`, `--help`): N simulated',
  '  hosts (1,000 and 10,000) heartbeating at 1 Hz from a separate process over a real',
  '  nats-server to a real host-registry process on the real Postgres. Per run: the',
  "  host-registry process's CPU (share of one core), heartbeat processing p50/p99",
  '  (receipt → stored, as host-registry measures it), heartbeats stored per second',
  '  against sent, and for hosts that stop, detection latency p50/p99 from their last',
  '  heartbeat to the `unreachable` event (3 missed 1 s intervals), beside Nomad\'s',
  '  default (≈20–30 s). `batched` is the shipped intake (newest heartbeat per host in',
  '  memory, one guarded UPDATE per flush); `direct` is one UPDATE per heartbeat, for',
  '  comparison.',
].join('\n');

const USAGE = `npx tsx bench/membership/run.ts [options]

  --hosts LIST     fleet sizes, comma-separated (default 1000,10000)
  --modes LIST     batched,direct (default both)
  --seconds N      measured window per run after a 6 s warm-up (default 20)
  --stop N         hosts stopped per run (default 1% of the fleet, at least 10, at most 100)
  --no-append      print only; do not append to bench/RESULTS.md
  -h, --help       this text
`;

interface Options {
  hosts: number[];
  modes: Array<'batched' | 'direct'>;
  seconds: number;
  stop?: number;
  append: boolean;
}

function parseArgs(argv: string[]): Options | undefined {
  const o: Options = { hosts: [1000, 10_000], modes: ['batched', 'direct'], seconds: 20, append: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '-h' || a === '--help') return undefined;
    else if (a === '--hosts') o.hosts = next().split(',').map((v) => positive(v, a));
    else if (a === '--modes') {
      o.modes = next().split(',') as Options['modes'];
      if (o.modes.some((m) => m !== 'batched' && m !== 'direct')) throw new Error('--modes takes batched,direct');
    } else if (a === '--seconds') o.seconds = Math.min(120, positive(next(), a));
    else if (a === '--stop') o.stop = positive(next(), a);
    else if (a === '--no-append') o.append = false;
    else throw new Error(`unknown option ${a}\n${USAGE}`);
  }
  if (o.hosts.some((n) => n > 20_000)) throw new Error('--hosts: at most 20000 (the run must stay bounded)');
  return o;
}

function positive(v: string, flag: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag}: ${v} is not a positive integer`);
  return n;
}

/** utime + stime of every process in the group `pgid`, in seconds. */
function groupCpuSeconds(pgid: number): number {
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // After "pid (comm) ": state ppid pgrp ... utime is field 14, stime 15 (1-based over the whole line).
      if (Number(fields[2]) !== pgid) continue;
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // The process ended meanwhile.
    }
  }
  return ticks / CLK_TCK;
}

function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function eventually<T>(probe: () => Promise<T | undefined | false>, what: string, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v as T;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function stopProcess(proc: SupervisedProcess): Promise<void> {
  proc.kill('SIGTERM');
  const exited = await Promise.race([proc.wait().then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000))]);
  if (!exited) {
    // A backlog of heartbeats (direct mode) is drained before exiting: do not wait for it.
    proc.kill('SIGKILL');
    // The child is unref'd: a timer keeps this process alive until its exit is seen.
    await Promise.race([proc.wait(), new Promise((r) => setTimeout(r, 5000))]);
  }
}

interface RunResult {
  mode: string;
  hosts: number;
  sentPerSec: number;
  storedPerSec: number;
  registryCpuPct: number;
  simulatorCpuPct: number;
  hbP50: number;
  hbP99: number;
  flushP99: number;
  detections: number[];
  stopped: number;
  falseUnreachable: number;
}

async function runOnce(natsUrl: string, mode: 'batched' | 'direct', hosts: number, seconds: number, stopCount: number, workDir: string): Promise<RunResult> {
  const db = await createThrowawayDatabase({});
  const prisma = createPrismaClient(db.url, { maxConnections: 2 });
  let registry: SupervisedProcess | undefined;
  let bus: EventBus | undefined;
  let client: PromiseClient<hostRegistryV1.HostRegistryServiceClient> | undefined;
  let ticker: NodeJS.Timeout | undefined;
  try {
    // The hosts exist already (registration is not what is measured).
    const ids: string[] = Array.from({ length: hosts }, () => randomUUID());
    for (let i = 0; i < hosts; i += 5000) {
      await prisma.host.createMany({
        data: ids.slice(i, i + 5000).map((id, j) => ({ id, name: `sim-${i + j}`, status: 'online', agentAddress: '127.0.0.1:1', capacity: {}, lastHeartbeatAt: new Date() })),
      });
    }
    const port = await freePort();
    registry = await spawnSupervised({
      program: process.execPath,
      args: ['--import', 'tsx', join(REPO, 'apps/host-registry/src/main.ts')],
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: process.env.HOME ?? workDir,
        TSX_TSCONFIG_PATH: join(REPO, 'tsconfig.base.json'),
        DATABASE_URL: db.url,
        NATS_URL: natsUrl,
        HOST_KEY_ENCRYPTION_KEY: randomUUID() + randomUUID(),
        HOST_REGISTRY_GRPC_PORT: String(port),
        HEARTBEAT_INTERVAL_MS: String(INTERVAL_MS),
        MISSED_HEARTBEATS_BEFORE_UNREACHABLE: String(MISSED),
        HEARTBEAT_WRITE_MODE: mode,
        // Simulated hosts are inserted straight into the database and hold no
        // JWT. Token checks are cached per token (one per host per minute), so
        // leaving them out changes the steady-state cost little.
        HEARTBEAT_REQUIRE_HOST_TOKEN: 'false',
        LOG_LEVEL: 'warn',
      },
      cwd: REPO,
      logPath: join(workDir, `host-registry-${mode}-${hosts}.log`),
    });
    client = createClient(hostRegistryV1.HostRegistryServiceClient, `127.0.0.1:${port}`, { deadlineMs: 10_000 });
    const c = client;

    bus = await connectEventBus({ url: natsUrl, name: 'membership-bench', logger: silentLogger });
    const b = bus;
    const stoppedAt = new Map<string, number>(); // host → performance.now() of its last heartbeat
    const lastSent = new Float64Array(hosts);
    const detections: number[] = [];
    let falseUnreachable = 0;
    const index = new Map(ids.map((id, i) => [id, i]));
    b.subscribe(Topics.hostStatus, (e) => {
      if (e.status !== HostStatus.HOST_STATUS_UNREACHABLE) return;
      const last = stoppedAt.get(e.hostId);
      if (last === undefined) {
        if (index.has(e.hostId)) falseUnreachable += 1;
        return;
      }
      detections.push(performance.now() - last);
      stoppedAt.delete(e.hostId);
    });
    await b.flush();

    // Simulated agents: host i beats in slot i % SLOTS of each second.
    const seq = new Uint32Array(hosts);
    const stopped = new Uint8Array(hosts);
    const bootId = randomUUID();
    let tick = 0;
    let sent = 0;
    const capacity = { cpuMillis: 8000, memoryMb: 32768, diskMb: 512000 };
    const drivers = [{ name: 'podman', healthy: true, version: '4.3.1', detail: '' }];
    ticker = setInterval(() => {
      const slot = tick++ % SLOTS;
      const now = new Date();
      const t = performance.now();
      for (let i = slot; i < hosts; i += SLOTS) {
        if (stopped[i]) continue;
        seq[i] += 1;
        b.publish(
          Topics.hostHeartbeat,
          ids[i],
          HostHeartbeat.fromPartial({
            hostId: ids[i],
            bootId,
            seq: seq[i],
            sentAt: now,
            capacity,
            usage: { cpuMillis: 100 + (seq[i] % 50), memoryMb: 1024, diskMb: 2048 },
            drivers,
            workloads: [{ workloadId: `w-${i}`, state: InstanceState.INSTANCE_STATE_RUNNING }],
            agentAddress: '127.0.0.1:1',
          }),
        );
        lastSent[i] = t;
        sent += 1;
      }
    }, TICK_MS);
    // The agents heartbeat from before host-registry is up, as a real fleet does.
    await eventually(async () => (await c.getFleetHealth({})).leader, 'host-registry up and leading');

    await new Promise((r) => setTimeout(r, 6000)); // warm-up: the leader's grace and steady state
    const h0 = await c.getFleetHealth({});
    const cpu0 = groupCpuSeconds(registry.pid);
    const self0 = selfCpuSeconds();
    const sent0 = sent;
    const t0 = performance.now();

    // Stop some hosts, spread over the first part of the window.
    const victims = [...ids.keys()].sort(() => Math.random() - 0.5).slice(0, stopCount);
    const stopSpan = Math.max(1000, (seconds * 1000) / 3);
    const stopTimers = victims.map((i, k) =>
      setTimeout(() => {
        stopped[i] = 1;
        stoppedAt.set(ids[i], lastSent[i]);
      }, (k * stopSpan) / victims.length),
    );

    await new Promise((r) => setTimeout(r, seconds * 1000));
    const wall = (performance.now() - t0) / 1000;
    const cpu1 = groupCpuSeconds(registry.pid);
    const self1 = selfCpuSeconds();
    const sentInWindow = sent - sent0;
    const h1 = await c.getFleetHealth({});
    stopTimers.forEach(clearTimeout);
    // Wait (bounded) for the last stopped hosts to be detected.
    await eventually(async () => stoppedAt.size === 0, 'all stopped hosts detected', 15_000).catch(() => undefined);
    return {
      mode,
      hosts,
      sentPerSec: sentInWindow / wall,
      storedPerSec: (h1.heartbeatsApplied - h0.heartbeatsApplied) / wall,
      registryCpuPct: ((cpu1 - cpu0) / wall) * 100,
      simulatorCpuPct: ((self1 - self0) / wall) * 100,
      hbP50: h1.heartbeatLatencyP50Ms,
      hbP99: h1.heartbeatLatencyP99Ms,
      flushP99: h1.flushP99Ms,
      detections,
      stopped: victims.length,
      falseUnreachable,
    };
  } finally {
    clearInterval(ticker);
    client?.close();
    await bus?.close();
    if (registry) await stopProcess(registry);
    await prisma.$disconnect();
    await db.drop();
  }
}

const fmt = (ms: number) => (!Number.isFinite(ms) ? '–' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

async function main() {
  let options: Options | undefined;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }
  if (!options) {
    console.log(USAGE);
    return;
  }
  process.env.DATABASE_URL ??= 'postgres://postgres@127.0.0.1:5432/test';
  const natsServer = resolveProgram('nats-server', [process.env.PATH ?? '', '/usr/sbin', '/sbin'].join(':'));
  if (!natsServer) throw new Error('nats-server is not installed (apt-get install nats-server)');
  const workDir = mkdtempSync(join(tmpdir(), 'membership-bench-'));
  const natsPort = await freePort();
  const nats = await spawnSupervised({
    program: natsServer,
    args: ['-a', '127.0.0.1', '-p', String(natsPort)],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    cwd: workDir,
    logPath: join(workDir, 'nats-server.log'),
  });
  const natsUrl = `nats://127.0.0.1:${natsPort}`;
  const results: RunResult[] = [];
  try {
    await eventually(async () => {
      const probe = await connectEventBus({ url: natsUrl, name: 'probe', logger: silentLogger });
      await probe.close();
      return true;
    }, 'nats-server');
    for (const mode of options.modes) {
      for (const hosts of options.hosts) {
        const stop = options.stop ?? Math.min(100, Math.max(10, Math.round(hosts / 100)));
        console.log(`run: ${mode}, ${hosts} hosts, ${options.seconds} s, ${stop} stopped`);
        const r = await runOnce(natsUrl, mode, hosts, options.seconds, stop, workDir);
        console.log(`  ${JSON.stringify({ ...r, detections: undefined, detected: r.detections.length })}`);
        results.push(r);
      }
    }
  } finally {
    await stopProcess(nats);
  }

  const natsVersion = readFileSync(join(workDir, 'nats-server.log'), 'utf8').match(/Version:\s+(\S+)/)?.[1] ?? 'unknown';
  rmSync(workDir, { recursive: true, force: true });
  const machine = await machineLine(REPO, []);
  const rows = results.map(
    (r) =>
      `| ${r.mode} | ${r.hosts.toLocaleString('en-US')} | ${Math.round(r.sentPerSec)} | ${Math.round(r.storedPerSec)} | ${r.registryCpuPct.toFixed(0)}% | ${r.simulatorCpuPct.toFixed(0)}% | ${fmt(r.hbP50)} | ${fmt(r.hbP99)} | ${fmt(r.flushP99)} | ${fmt(percentile(r.detections, 50))} | ${fmt(percentile(r.detections, 99))} | ${r.detections.length}/${r.stopped} | ${r.falseUnreachable} |`,
  );
  const section = [
    `## membership-bench — ${new Date().toISOString()}`,
    '',
    `${machine}; nats-server ${natsVersion}; Postgres at ${new URL(process.env.DATABASE_URL).host}. Run \`npx tsx bench/membership/run.ts ${process.argv.slice(2).join(' ')}\`. Heartbeat interval 1 s, unreachable after ${MISSED} missed, monitor check every 250 ms, batched flush every 200 ms; ${options.seconds} s measured per run after a 6 s warm-up.`,
    '',
    '| intake | hosts | heartbeats sent/s | stored/s | host-registry CPU (one core = 100%) | simulator CPU | heartbeat processing p50 | p99 | write p99 | detection p50 | p99 | detected | live hosts marked unreachable |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    `Nomad's default detection of a dead client for comparison: ≈20–30 s (heartbeat TTL plus \`heartbeat_grace\`, 10 s by default). Detection here is measured from a host's last heartbeat to the \`unreachable\` event; the floor is the timeout itself (${MISSED} × 1 s).` +
      " Heartbeat processing is receipt → stored under `batched` (mostly the wait for the next flush); under `direct` it is one UPDATE's duration, and the queue in front of it shows instead as stored/s below sent/s (a growing backlog) and as live hosts marked unreachable. Under `batched`, a host's heartbeats within one flush merge into its newest, so stored/s counts rows written. host-registry CPU excludes Postgres's own.",
  ].join('\n');
  console.log(`\n${section}\n`);
  if (options.append) appendResults(section, [MEMBERSHIP_DESCRIPTION]);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
