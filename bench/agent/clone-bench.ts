// Clone creation time at different base-image sizes: the point is that it
// is flat, because a clone is a copy-on-write overlay whose cost does not
// depend on the base (DESIGN §3). Each Corral clone (lock, base check, two
// fsync'd state writes around qemu-img) is timed against, in the same run,
// the bare `qemu-img create -f qcow2 -b` it wraps, alternating the two so
// drift hits both alike. Ratios within one run are what to compare: the
// machines here have 2 cores and noisy neighbours.
//
//   npx tsx bench/agent/clone-bench.ts            # N=20 per size
//   CLONE_BENCH_N=50 CLONE_BENCH_DIR=/var/tmp npx tsx bench/agent/clone-bench.ts
//
// Prints a table and appends a dated section to bench/RESULTS.md.

import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statfsSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { availableParallelism, release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createExecutor, execErrorFromResult, type Command } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { Qcow2VolumeManager } from '../../apps/node-agent/src/volumes/qcow2-volume-manager';
import { qemuImgCreateOverlay } from '../../apps/node-agent/src/volumes/qemu-img';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SIZES = [
  { label: '100 MiB', bytes: 100 * MiB },
  { label: '1 GiB', bytes: GiB },
  { label: '10 GiB', bytes: 10 * GiB },
];
const N = Number(process.env.CLONE_BENCH_N ?? 20);
const WARMUP = 2;
const RESULTS = resolve(__dirname, '..', 'RESULTS.md');

interface Row {
  label: string;
  corral: number[];
  raw: number[];
  remove: number[];
}

const qemuImgVersion: Command<string> = {
  program: 'qemu-img',
  args: ['--version'],
  parse: (stdout) => stdout.split('\n')[0].trim(),
  mapError: execErrorFromResult,
};

function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
}

const ms = (value: number) => value.toFixed(1);

async function time(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

function filesystemOf(path: string): string {
  const names: Record<number, string> = { 0xef53: 'ext4', 0x01021994: 'tmpfs', 0x794c7630: 'overlayfs', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x2fc12fc1: 'zfs' };
  try {
    const type = statfsSync(path).type;
    return names[type] ?? `0x${type.toString(16)}`;
  } catch {
    return 'unknown';
  }
}

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    return line ? line.split(':')[1].trim() : 'unknown';
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  if (!Number.isInteger(N) || N < 1) throw new Error('CLONE_BENCH_N must be a positive integer');
  const executor = createExecutor({ allowedPrograms: ['qemu-img'], logger: silentLogger });
  if (!executor.resolve('qemu-img')) throw new Error('qemu-img is not installed (Debian package qemu-utils)');
  const root = mkdtempSync(join(process.env.CLONE_BENCH_DIR ?? tmpdir(), 'corral-clone-bench-'));
  const rows: Row[] = [];
  try {
    const volumes = new Qcow2VolumeManager({ stateDir: join(root, 'state'), executor, logger: silentLogger });
    await volumes.reconcile();
    for (const size of SIZES) {
      const base = join(root, `base-${size.bytes}.raw`);
      writeFileSync(base, '');
      truncateSync(base, size.bytes); // sparse: apparent size only
      if (statSync(base).blocks !== 0) throw new Error(`${base} is not sparse on this filesystem`);
      const baseId = await volumes.prepareBase(base);
      const row: Row = { label: size.label, corral: [], raw: [], remove: [] };
      // All clones of a size stay until the end (as clones of one image on a
      // busy host would), then go; the base is released with the last one.
      const workloads: string[] = [];
      for (let i = 0; i < WARMUP + N; i++) {
        const rawPath = join(root, `raw-${size.bytes}-${i}.qcow2`);
        const workloadId = `bench-${size.bytes}-${i}`;
        workloads.push(workloadId);
        const runRaw = () => time(() => executor.run(qemuImgCreateOverlay({ basePath: base, baseFormat: 'raw', clonePath: rawPath })));
        const runCorral = () => time(() => volumes.clone(baseId, workloadId));
        // Alternate which goes first so neither always runs on a warmer cache.
        let raw: number;
        let corral: number;
        if (i % 2 === 0) {
          raw = await runRaw();
          corral = await runCorral();
        } else {
          corral = await runCorral();
          raw = await runRaw();
        }
        if (i < WARMUP) continue;
        row.raw.push(raw);
        row.corral.push(corral);
      }
      for (const workloadId of workloads) row.remove.push(await time(() => volumes.remove(workloadId)));
      rows.push(row);
      rmSync(base);
      for (let i = 0; i < WARMUP + N; i++) rmSync(join(root, `raw-${size.bytes}-${i}.qcow2`), { force: true });
    }
    const leftovers = await volumes.list();
    if (leftovers.clones.length > 0 || leftovers.bases.length > 0) throw new Error('the bench leaked volumes');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }

  const machine = {
    nproc: availableParallelism(),
    kernel: release(),
    cpu: cpuModel(),
    node: process.version,
    qemuImg: await executor.run(qemuImgVersion),
    filesystem: filesystemOf(process.env.CLONE_BENCH_DIR ?? tmpdir()),
  };
  const header = '| base (sparse raw) | Corral clone p50 | p95 | raw `qemu-img create -b` p50 | p95 | Corral/raw (p50) | Corral remove p50 |';
  const rule = '|---|---:|---:|---:|---:|---:|---:|';
  const lines = rows.map((r) => {
    const c50 = percentile(r.corral, 50);
    const r50 = percentile(r.raw, 50);
    return `| ${r.label} | ${ms(c50)} ms | ${ms(percentile(r.corral, 95))} ms | ${ms(r50)} ms | ${ms(percentile(r.raw, 95))} ms | ${(c50 / r50).toFixed(2)}× | ${ms(percentile(r.remove, 50))} ms |`;
  });
  const first = percentile(rows[0].corral, 50);
  const last = percentile(rows[rows.length - 1].corral, 50);
  const flatness = `Corral p50 at ${rows[rows.length - 1].label} / at ${rows[0].label}: ${(last / first).toFixed(2)}× (a base ${Math.round(SIZES[SIZES.length - 1].bytes / SIZES[0].bytes)}× larger).`;

  const table = [header, rule, ...lines].join('\n');
  console.log(`\nclone-bench: N=${N} per size (after ${WARMUP} warm-up), ${machine.nproc} CPUs, ${machine.cpu}, kernel ${machine.kernel}, ${machine.filesystem}\n`);
  console.log(table);
  console.log(`\n${flatness}`);

  if (!existsSync(RESULTS)) {
    writeFileSync(
      RESULTS,
      [
        '# Benchmark results',
        '',
        'Each benchmark appends one dated section per run; nothing here is edited by hand.',
        'A section names the benchmark, the machine (`nproc`, `uname -r`, CPU model from',
        '/proc/cpuinfo, Node and tool versions, filesystem of the work dir) and a table.',
        'Compare ratios measured in the same run, not absolute times across runs: the',
        'machines here have 2 cores and share their hosts.',
        '',
        '- `bench/agent/clone-bench.ts` (`npx tsx bench/agent/clone-bench.ts`): time to create a',
        '  copy-on-write root disk (`Qcow2VolumeManager.clone`) for sparse raw bases of',
        '  100 MiB, 1 GiB and 10 GiB, N clones each, p50/p95, next to the bare',
        '  `qemu-img create -f qcow2 -b` it wraps, interleaved in the same run. The',
        '  Corral/raw ratio is the cost of Corral\'s bookkeeping (lock, base check, two',
        '  fsync\'d atomic state writes). Clone time should not grow with the base size.',
        '',
      ].join('\n'),
    );
  }
  appendFileSync(
    RESULTS,
    [
      '',
      `## clone-bench — ${new Date().toISOString()}`,
      '',
      `Machine: nproc ${machine.nproc}, kernel ${machine.kernel}, CPU ${machine.cpu}; Node ${machine.node}; ${machine.qemuImg}; work dir on ${machine.filesystem}. N=${N} per size after ${WARMUP} warm-up.`,
      '',
      table,
      '',
      flatness,
      '',
    ].join('\n'),
  );
  console.log(`\nappended to ${RESULTS}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
