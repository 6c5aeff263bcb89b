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
// Prints a table and appends a dated section to bench/RESULTS.md. Also run
// as the first part of bench/agent/run.ts (runCloneBench).

import { mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, type Executor } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { Qcow2VolumeManager } from '../../apps/node-agent/src/volumes/qcow2-volume-manager';
import { qemuImgCreateOverlay } from '../../apps/node-agent/src/volumes/qemu-img';
import type { Cleanup } from './lib/cleanup';
import { machineLine } from './lib/machine';
import { appendResults, CLONE_DESCRIPTION, RESULTS_PATH } from './lib/results';
import { percentile, time } from './lib/stats';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SIZES = [
  { label: '100 MiB', bytes: 100 * MiB },
  { label: '1 GiB', bytes: GiB },
  { label: '10 GiB', bytes: 10 * GiB },
];
export const CLONE_WARMUP = 2;

interface Row {
  label: string;
  corral: number[];
  raw: number[];
  remove: number[];
}

export interface CloneBenchResult {
  n: number;
  table: string;
  flatness: string;
}

const ms = (value: number) => value.toFixed(1);

/** Why the clone part cannot run here, or undefined. */
export function cloneBenchUnavailableReason(): string | undefined {
  const executor = createExecutor({ allowedPrograms: ['qemu-img'], logger: silentLogger });
  return executor.resolve('qemu-img') ? undefined : 'qemu-img is not installed (Debian package qemu-utils)';
}

/** Runs the clone bench in a fresh directory under `dir` (removed afterwards, also through `cleanup` on an interrupt). */
export async function runCloneBench(options: { n: number; dir: string; cleanup?: Cleanup }): Promise<CloneBenchResult> {
  const { n } = options;
  if (!Number.isInteger(n) || n < 1) throw new Error('the clone count must be a positive integer');
  const executor: Executor = createExecutor({ allowedPrograms: ['qemu-img'], logger: silentLogger });
  const unavailable = cloneBenchUnavailableReason();
  if (unavailable) throw new Error(unavailable);
  const root = mkdtempSync(join(options.dir, 'corral-clone-bench-'));
  const removeRoot = () => rmSync(root, { recursive: true, force: true });
  const undo = options.cleanup?.add(`remove ${root}`, removeRoot);
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
      for (let i = 0; i < CLONE_WARMUP + n; i++) {
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
        if (i < CLONE_WARMUP) continue;
        row.raw.push(raw);
        row.corral.push(corral);
      }
      for (const workloadId of workloads) row.remove.push(await time(() => volumes.remove(workloadId)));
      rows.push(row);
      rmSync(base);
      for (let i = 0; i < CLONE_WARMUP + n; i++) rmSync(join(root, `raw-${size.bytes}-${i}.qcow2`), { force: true });
    }
    const leftovers = await volumes.list();
    if (leftovers.clones.length > 0 || leftovers.bases.length > 0) throw new Error('the bench leaked volumes');
  } finally {
    if (undo) await undo();
    else removeRoot();
  }

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
  return { n, table: [header, rule, ...lines].join('\n'), flatness };
}

async function main(): Promise<void> {
  const n = Number(process.env.CLONE_BENCH_N ?? 20);
  if (!Number.isInteger(n) || n < 1) throw new Error('CLONE_BENCH_N must be a positive integer');
  const dir = process.env.CLONE_BENCH_DIR ?? tmpdir();
  const result = await runCloneBench({ n, dir });
  const machine = await machineLine(dir, ['qemu-img']);
  console.log(`\nclone-bench: N=${n} per size (after ${CLONE_WARMUP} warm-up)\n${machine}\n`);
  console.log(result.table);
  console.log(`\n${result.flatness}`);
  appendResults(
    [`## clone-bench — ${new Date().toISOString()}`, '', `${machine}. N=${n} per size after ${CLONE_WARMUP} warm-up.`, '', result.table, '', result.flatness].join('\n'),
    [CLONE_DESCRIPTION],
  );
  console.log(`\nappended to ${RESULTS_PATH}`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
