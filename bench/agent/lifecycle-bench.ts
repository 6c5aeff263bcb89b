import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isProcessAlive, type Executor } from '@corral/exec';
import { InstanceState, agentV1 } from '@corral/proto';
import { BUSYBOX_INDEX_HTML, BUSYBOX_TEST_IMAGE, freePort, type MicrovmImage } from '@corral/testing';
import { containerName } from '../../apps/node-agent/src/drivers/podman/commands';
import { DEFAULT_NOFILE, DEFAULT_NPROC } from '../../apps/node-agent/src/drivers/podman/podman-driver';
import { clampUlimit, readHardLimits } from '../../apps/node-agent/src/drivers/podman/host-limits';
import { DEFAULT_WORKLOAD_PATH } from '../../apps/node-agent/src/drivers/process/process-driver';
import { QmpClient } from '../../apps/node-agent/src/drivers/qemu/qmp-client';
import { BENCH_VM_MEMORY_MB, BENCH_VM_VCPUS, type BenchAgent } from './agent-under-test';
import type { DriverName } from './lib/args';
import type { Cleanup } from './lib/cleanup';
import { waitServing } from './lib/http';
import { formatMs, now, percentile, ratio, time } from './lib/stats';
import { BENCH_RUN_LABEL, podmanRemove, podmanStatus, rawPodmanPause, rawPodmanRun, rawPodmanUnpause } from './raw/podman';
import { isStopped, killRawProcess, rawContinue, rawStop, startRawProcess } from './raw/process';
import { killRawVm, qemuArgvDifference, rawQemuArgs, rawQmpCommand, rawQmpStatus, startRawVm } from './raw/qemu';

// create→serving and pause/resume, per driver: Corral (the agent's gRPC
// StartWorkload / PauseWorkload / ResumeWorkload) against the same workload
// run raw, one sample of each back to back, alternating which goes first so
// that drift and warm caches hit both alike.

/** One running workload, on either side. */
interface Instance {
  port: number;
  /** Corral only: how long StartWorkload took to answer. */
  rpcMs?: number;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Asks the runtime itself (podman inspect, QMP query-status, /proc). */
  isPaused(): Promise<boolean>;
  /** Why it can no longer serve (it exited), or undefined. */
  gone(): string | undefined;
  destroy(): Promise<void>;
}

interface Side {
  label: string;
  /** Untimed preparation (a free port...); resolves to the timed launch. */
  prepare(tag: string): Promise<() => Promise<Instance>>;
}

interface DriverCase {
  driver: DriverName;
  cleanup: Cleanup;
  /** What the raw side is, for the table. */
  rawLabel: string;
  text: string;
  /** Pause between HTTP attempts, the same on both sides. */
  pollMs: number;
  serveTimeoutMs: number;
  corral: Side;
  raw: Side;
}

export interface CreateRow {
  driver: DriverName;
  rawLabel: string;
  corral: number[];
  raw: number[];
  rpc: number[];
  error?: string;
}

export interface PauseRow {
  driver: DriverName;
  rawLabel: string;
  corralPause: number[];
  corralResume: number[];
  rawPause: number[];
  rawResume: number[];
  error?: string;
}

export interface LifecycleContext {
  root: string;
  runId: string;
  cleanup: Cleanup;
  bench: BenchAgent;
  podman: Executor;
  qemuPath?: string;
  image?: MicrovmImage;
  /** Facts worth printing under the tables (e.g. how Corral's qemu command line differs from the raw one). */
  notes: string[];
}

const PROCESS_PAGE_TEXT = 'corral-bench-process-ok';
const CREATE_WARMUP = 1;
const PAUSE_WARMUP = 2;

function expectState(workload: agentV1.AgentWorkload | undefined, state: InstanceState, what: string): agentV1.AgentWorkload {
  if (!workload || workload.state !== state) throw new Error(`${what}: the agent answered ${workload?.state ?? 'nothing'}, expected ${state}`);
  return workload;
}

/** The Corral side of a driver: StartWorkload with `spec`, then the agent's own pause/resume/stop. */
function corralSide(ctx: LifecycleContext, driver: DriverName, spec: (workloadId: string) => agentV1.WorkloadSpec, runtime: {
  isPaused(workload: agentV1.AgentWorkload): Promise<boolean>;
  gone?(workload: agentV1.AgentWorkload): string | undefined;
  afterStop?(workloadId: string): Promise<void>;
}): Side {
  const { client } = ctx.bench;
  return {
    label: 'Corral',
    prepare: async (tag) => {
      const workloadId = `${ctx.runId}-${driver}-${tag}`;
      return async () => {
        const t0 = now();
        const started = expectState((await client.startWorkload({ spec: spec(workloadId) })).workload, InstanceState.INSTANCE_STATE_RUNNING, `StartWorkload ${workloadId}`);
        const rpcMs = now() - t0;
        const port = started.ports[0]?.hostPort;
        if (!port) throw new Error(`StartWorkload ${workloadId} allocated no host port`);
        const stop = async () => {
          await client.stopWorkload({ workloadId, signal: 'SIGKILL', timeoutSeconds: 5 });
          await runtime.afterStop?.(workloadId);
        };
        const undo = ctx.cleanup.add(`stop Corral workload ${workloadId}`, stop);
        return {
          port,
          rpcMs,
          pause: async () => void expectState((await client.pauseWorkload({ workloadId })).workload, InstanceState.INSTANCE_STATE_PAUSED, `PauseWorkload ${workloadId}`),
          resume: async () => void expectState((await client.resumeWorkload({ workloadId })).workload, InstanceState.INSTANCE_STATE_RUNNING, `ResumeWorkload ${workloadId}`),
          isPaused: () => runtime.isPaused(started),
          gone: () => runtime.gone?.(started),
          destroy: undo,
        };
      };
    },
  };
}

function processCase(ctx: LifecycleContext): DriverCase {
  const www = join(ctx.root, 'www');
  mkdirSync(www, { recursive: true });
  writeFileSync(join(www, 'index.html'), `<!doctype html><p>${PROCESS_PAGE_TEXT}</p>\n`);
  // The driver passes $PORT (the host port: a process shares the host's network).
  const command = ['/bin/sh', '-c', `exec busybox httpd -f -p 127.0.0.1:$PORT -h ${www}`];
  const pidOf = (w: agentV1.AgentWorkload) => Number(w.handle);
  return {
    driver: 'process',
    cleanup: ctx.cleanup,
    rawLabel: 'spawn of the same command',
    text: PROCESS_PAGE_TEXT,
    pollMs: 5,
    serveTimeoutMs: 30_000,
    corral: corralSide(
      ctx,
      'process',
      (workloadId) =>
        agentV1.WorkloadSpec.fromPartial({
          workloadId,
          name: workloadId,
          driver: 'process',
          command,
          labels: { [BENCH_RUN_LABEL]: ctx.runId },
          routes: [{ name: 'http', port: 8080, protocol: 'tcp' }],
        }),
      {
        isPaused: async (w) => isStopped(pidOf(w)),
        gone: (w) => (isProcessAlive(pidOf(w)) ? undefined : `process ${pidOf(w)} exited`),
      },
    ),
    raw: {
      label: 'raw',
      prepare: async (tag) => {
        const port = await freePort();
        const dir = join(ctx.root, 'raw-process', tag);
        mkdirSync(dir, { recursive: true });
        return async () => {
          const proc = await startRawProcess(command, { PATH: DEFAULT_WORKLOAD_PATH, PORT: String(port), PORT_HTTP: String(port) }, dir, join(dir, 'output.log'));
          const undo = ctx.cleanup.add(`kill raw process ${proc.child.pid}`, () => killRawProcess(proc));
          return {
            port,
            pause: () => rawStop(proc),
            resume: () => rawContinue(proc),
            isPaused: async () => isStopped(proc.child.pid),
            gone: () => (proc.exit ? `exited (${proc.exit.signal ?? proc.exit.exitCode})` : undefined),
            destroy: undo,
          };
        };
      },
    },
  };
}

function podmanCase(ctx: LifecycleContext): DriverCase {
  const command = ['httpd', '-f', '-p', '8080', '-h', '/www'];
  const hard = readHardLimits();
  // The limits the driver sets (its defaults, lowered to the host's hard limits).
  const ulimits = { nofile: clampUlimit(DEFAULT_NOFILE, hard.nofile), nproc: clampUlimit(DEFAULT_NPROC, hard.nproc) };
  const text = 'hello from corral-busybox';
  if (!BUSYBOX_INDEX_HTML.includes(text)) throw new Error('the busybox test page changed: update the bench');
  const status = async (ref: string) => ctx.podman.run(podmanStatus(ref));
  return {
    driver: 'podman',
    cleanup: ctx.cleanup,
    rawLabel: '`podman run -d`',
    text,
    pollMs: 5,
    serveTimeoutMs: 60_000,
    corral: corralSide(
      ctx,
      'podman',
      (workloadId) =>
        agentV1.WorkloadSpec.fromPartial({
          workloadId,
          name: workloadId,
          driver: 'podman',
          image: BUSYBOX_TEST_IMAGE,
          command,
          labels: { [BENCH_RUN_LABEL]: ctx.runId },
          routes: [{ name: 'http', port: 8080, protocol: 'tcp' }],
        }),
      {
        isPaused: async (w) => (await status(containerName(w.workloadId))) === 'paused',
        // The agent stops containers but leaves them for inspection; the bench removes them.
        afterStop: async (workloadId) => void (await ctx.podman.run(podmanRemove([containerName(workloadId)]))),
      },
    ),
    raw: {
      label: 'raw',
      prepare: async () => {
        const port = await freePort();
        return async () => {
          const id = await ctx.podman.run(rawPodmanRun({ image: BUSYBOX_TEST_IMAGE, command, hostPort: port, guestPort: 8080, runtime: 'runc', ulimits, runId: ctx.runId }));
          const undo = ctx.cleanup.add(`remove raw container ${id.slice(0, 12)}`, async () => void (await ctx.podman.run(podmanRemove([id]))));
          return {
            port,
            pause: async () => void (await ctx.podman.run(rawPodmanPause(id))),
            resume: async () => void (await ctx.podman.run(rawPodmanUnpause(id))),
            isPaused: async () => (await status(id)) === 'paused',
            gone: () => undefined,
            destroy: undo,
          };
        };
      },
    },
  };
}

function qemuCase(ctx: LifecycleContext): DriverCase {
  const image = ctx.image;
  const qemuPath = ctx.qemuPath;
  if (!image || !qemuPath) throw new Error('qemu case without qemu or image');
  const qmpStatus = async (socket: string) => {
    const qmp = await QmpClient.connect(socket);
    try {
      return (await qmp.execute<{ status: string }>('query-status')).status;
    } finally {
      qmp.close();
    }
  };
  // Once: how the machine Corral starts differs from the raw one (the same
  // guest either way, but Corral may add devices of its own).
  let noted = false;
  const noteArgvDifference = (pid: number) => {
    if (noted) return;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).slice(1);
    } catch {
      return;
    }
    noted = true;
    const raw = rawQemuArgs({ qemuPath, image, dir: '/x', name: 'x', hostPort: 1, memoryMb: BENCH_VM_MEMORY_MB, vcpus: BENCH_VM_VCPUS });
    const diff = qemuArgvDifference(argv, raw);
    ctx.notes.push(
      diff.corralOnly.length + diff.rawOnly.length === 0
        ? "qemu: Corral's and the raw command line have the same options and devices."
        : `qemu: Corral's command line also has ${diff.corralOnly.map((k) => `\`${k}\``).join(', ') || 'nothing more'}; the raw one also has ${diff.rawOnly.map((k) => `\`${k}\``).join(', ') || 'nothing more'}.`,
    );
  };
  return {
    driver: 'qemu',
    cleanup: ctx.cleanup,
    rawLabel: 'bare `qemu-system-x86_64`, same kernel, initramfs, machine and NIC',
    text: image.pageText,
    pollMs: 20,
    serveTimeoutMs: 120_000,
    corral: corralSide(
      ctx,
      'qemu',
      (workloadId) =>
        agentV1.WorkloadSpec.fromPartial({
          workloadId,
          name: workloadId,
          driver: 'qemu',
          labels: { [BENCH_RUN_LABEL]: ctx.runId },
          resources: { memoryMb: BENCH_VM_MEMORY_MB, vcpus: BENCH_VM_VCPUS },
          vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: image.kernelArgs },
          routes: [{ name: 'http', port: image.guestHttpPort, protocol: 'tcp' }],
        }),
      {
        isPaused: async (w) => (await qmpStatus(join(ctx.bench.qemuStateDir, w.workloadId, 'qmp.sock'))) === 'paused',
        gone: (w) => {
          noteArgvDifference(Number(w.handle));
          return isProcessAlive(Number(w.handle)) ? undefined : `qemu ${w.handle} exited`;
        },
      },
    ),
    raw: {
      label: 'raw',
      prepare: async (tag) => {
        const port = await freePort();
        const dir = join(ctx.root, 'raw-qemu', tag);
        return async () => {
          const vm = await startRawVm({ qemuPath, image, dir, name: `raw-${tag}`, hostPort: port, memoryMb: BENCH_VM_MEMORY_MB, vcpus: BENCH_VM_VCPUS });
          const undo = ctx.cleanup.add(`kill raw qemu ${vm.child.pid}`, () => killRawVm(vm));
          return {
            port,
            pause: async () => void (await rawQmpCommand(vm, 'stop')),
            resume: async () => void (await rawQmpCommand(vm, 'cont')),
            isPaused: async () => (await rawQmpStatus(vm)) === 'paused',
            gone: () => (vm.exit ? `qemu exited (${vm.exit.signal ?? vm.exit.exitCode})` : undefined),
            destroy: undo,
          };
        };
      },
    },
  };
}

export function driverCase(ctx: LifecycleContext, driver: DriverName): DriverCase {
  if (driver === 'process') return processCase(ctx);
  if (driver === 'podman') return podmanCase(ctx);
  return qemuCase(ctx);
}

async function launchServing(c: DriverCase, side: Side, tag: string): Promise<{ instance: Instance; ms: number }> {
  c.cleanup.throwIfAborted();
  const launch = await side.prepare(tag);
  const t0 = now();
  const instance = await launch();
  try {
    await waitServing({ port: instance.port, text: c.text, intervalMs: c.pollMs, timeoutMs: c.serveTimeoutMs, abandon: () => (c.cleanup.aborted ? 'interrupted' : instance.gone()) });
  } catch (err) {
    await instance.destroy().catch(() => undefined);
    c.cleanup.throwIfAborted();
    throw new Error(`${c.driver} ${side.label}: ${(err as Error).message}`);
  }
  return { instance, ms: now() - t0 };
}

/** create→serving, n samples per side after a warm-up, alternating the order. */
export async function benchCreate(c: DriverCase, n: number, log: (line: string) => void): Promise<CreateRow> {
  const row: CreateRow = { driver: c.driver, rawLabel: c.rawLabel, corral: [], raw: [], rpc: [] };
  for (let i = 0; i < CREATE_WARMUP + n; i++) {
    const sides = i % 2 === 0 ? [c.raw, c.corral] : [c.corral, c.raw];
    const last: Record<string, number> = {};
    for (const side of sides) {
      const { instance, ms } = await launchServing(c, side, `c${i}`);
      await instance.destroy();
      last[side.label] = ms;
      if (i < CREATE_WARMUP) continue;
      if (side === c.corral) {
        row.corral.push(ms);
        row.rpc.push(instance.rpcMs ?? Number.NaN);
      } else {
        row.raw.push(ms);
      }
    }
    log(`  ${c.driver} create ${i < CREATE_WARMUP ? 'warm-up' : `${i - CREATE_WARMUP + 1}/${n}`}: Corral ${formatMs(last[c.corral.label])}, raw ${formatMs(last[c.raw.label])}`);
  }
  return row;
}

/** pause then resume of one long-running workload per side, n cycles after a warm-up; each state checked in the runtime. */
export async function benchPause(c: DriverCase, n: number, log: (line: string) => void): Promise<PauseRow> {
  const row: PauseRow = { driver: c.driver, rawLabel: PAUSE_RAW_LABELS[c.driver], corralPause: [], corralResume: [], rawPause: [], rawResume: [] };
  const corral = (await launchServing(c, c.corral, 'p')).instance;
  try {
    const raw = (await launchServing(c, c.raw, 'p')).instance;
    try {
      for (let i = 0; i < PAUSE_WARMUP + n; i++) {
        const order = i % 2 === 0 ? [raw, corral] : [corral, raw];
        for (const instance of order) {
          c.cleanup.throwIfAborted();
          const who = instance === corral ? 'Corral' : 'raw';
          const paused = await time(() => instance.pause());
          if (!(await instance.isPaused())) throw new Error(`${c.driver} ${who}: pause returned but the runtime does not report it paused`);
          const resumed = await time(() => instance.resume());
          if (await instance.isPaused()) throw new Error(`${c.driver} ${who}: resume returned but the runtime still reports it paused`);
          await waitServing({ port: instance.port, text: c.text, intervalMs: c.pollMs, timeoutMs: 10_000 });
          if (i < PAUSE_WARMUP) continue;
          (instance === corral ? row.corralPause : row.rawPause).push(paused);
          (instance === corral ? row.corralResume : row.rawResume).push(resumed);
        }
      }
      log(`  ${c.driver} pause/resume: ${n} cycles per side`);
    } finally {
      await raw.destroy();
    }
  } finally {
    await corral.destroy();
  }
  return row;
}

export function createTable(rows: readonly CreateRow[]): string {
  const lines = [
    '| driver | raw baseline | N | Corral p50 | p95 | raw p50 | p95 | Corral/raw (p50) | StartWorkload answered p50 |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    if (r.error) {
      lines.push(`| ${r.driver} | ${r.rawLabel} | – | ${r.error} | | | | | |`);
      continue;
    }
    const c50 = percentile(r.corral, 50);
    const r50 = percentile(r.raw, 50);
    lines.push(
      `| ${r.driver} | ${r.rawLabel} | ${r.corral.length} | ${formatMs(c50)} | ${formatMs(percentile(r.corral, 95))} | ${formatMs(r50)} | ${formatMs(percentile(r.raw, 95))} | ${ratio(c50, r50)} | ${formatMs(percentile(r.rpc, 50))} |`,
    );
  }
  return lines.join('\n');
}

export function pauseTable(rows: readonly PauseRow[]): string {
  const lines = [
    '| driver | raw baseline | N | Corral pause p50 | p95 | raw pause p50 | p95 | pause Corral/raw | Corral resume p50 | p95 | raw resume p50 | p95 | resume Corral/raw |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    if (r.error) {
      lines.push(`| ${r.driver} | ${r.rawLabel} | – | ${r.error} | | | | | | | | | |`);
      continue;
    }
    const cp = percentile(r.corralPause, 50);
    const rp = percentile(r.rawPause, 50);
    const cr = percentile(r.corralResume, 50);
    const rr = percentile(r.rawResume, 50);
    lines.push(
      `| ${r.driver} | ${r.rawLabel} | ${r.corralPause.length} | ${formatMs(cp)} | ${formatMs(percentile(r.corralPause, 95))} | ${formatMs(rp)} | ${formatMs(percentile(r.rawPause, 95))} | ${ratio(cp, rp)} | ${formatMs(cr)} | ${formatMs(percentile(r.corralResume, 95))} | ${formatMs(rr)} | ${formatMs(percentile(r.rawResume, 95))} | ${ratio(cr, rr)} |`,
    );
  }
  return lines.join('\n');
}

export const PAUSE_RAW_LABELS: Record<DriverName, string> = {
  process: 'SIGSTOP/SIGCONT to the group',
  podman: '`podman pause`/`unpause`',
  qemu: 'QMP `stop`/`cont`',
};
