import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '@corral/logging';
import { freePort, type MicrovmImage } from '@corral/testing';
import type { TaskHandle, TaskSpec } from '../../apps/node-agent/src/drivers/driver';
import { QemuDriver } from '../../apps/node-agent/src/drivers/qemu';
import { BENCH_VM_MEMORY_MB, BENCH_VM_VCPUS } from './agent-under-test';
import type { Cleanup } from './lib/cleanup';
import { waitServing } from './lib/http';
import { formatMs, now, percentile, ratio } from './lib/stats';
import { killRawVm, rawFinishIncoming, rawSnapshot, startRawVm, type RawVm } from './raw/qemu';

// qemu memory snapshots: how long until a VM restored from one serves HTTP,
// next to a cold boot of the same VM, for Corral's qemu driver
// (SnapshotCapability: snapshot, restoreFrom) and for bare qemu
// (`migrate` to exec:cat, `-incoming exec:cat` then `cont`). Measured at the
// driver: the agent does not offer snapshots over its API yet. Each round
// runs the four kinds back to back, in alternating order.

export interface SnapshotBenchResult {
  corralCold: number[];
  corralRestore: number[];
  rawCold: number[];
  rawRestore: number[];
  corralSnapshot: { ms: number; bytes: number };
  rawSnapshot: { ms: number; bytes: number };
}

const POLL_MS = 20;
const SERVE_TIMEOUT_MS = 120_000;

export async function benchSnapshot(
  ctx: { root: string; cleanup: Cleanup; qemuPath: string; image: MicrovmImage; runId: string },
  n: number,
  log: (line: string) => void,
): Promise<SnapshotBenchResult> {
  const { image, cleanup } = ctx;
  const driver = new QemuDriver({ accelerator: 'tcg', stateDir: join(ctx.root, 'snap-agent'), defaultMemoryMb: BENCH_VM_MEMORY_MB, defaultVcpus: BENCH_VM_VCPUS, logger: silentLogger });
  const snapDir = join(ctx.root, 'snapshots');
  mkdirSync(snapDir, { recursive: true, mode: 0o700 });
  const corralFile = join(snapDir, 'corral.snap');
  const rawFile = join(snapDir, 'raw.snap');
  const serving = (port: number, gone?: () => string | undefined) =>
    waitServing({ port, text: image.pageText, intervalMs: POLL_MS, timeoutMs: SERVE_TIMEOUT_MS, abandon: () => (cleanup.aborted ? 'interrupted' : gone?.()) });
  const spec = (tag: string, hostPort: number): TaskSpec => ({
    workloadId: `${ctx.runId}-snap-${tag}`,
    name: `snap-${tag}`,
    command: [],
    env: {},
    labels: {},
    vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: image.kernelArgs },
    resources: { memoryMb: BENCH_VM_MEMORY_MB, vcpus: BENCH_VM_VCPUS },
    ports: [{ name: 'http', guestPort: image.guestHttpPort, hostPort, protocol: 'tcp' }],
  });
  const track = (handle: TaskHandle) =>
    cleanup.add(`destroy VM ${handle.workloadId}`, async () => {
      await driver.stop(handle, { signal: 'SIGKILL', timeoutMs: 0 }).catch(() => undefined);
      await driver.destroy(handle, { force: true });
    });
  const trackRaw = (vm: RawVm) => cleanup.add(`kill raw qemu ${vm.child.pid}`, () => killRawVm(vm));
  const rawOptions = (tag: string, hostPort: number, incomingFile?: string) => ({
    qemuPath: ctx.qemuPath,
    image,
    dir: join(ctx.root, 'raw-snap', tag),
    name: `raw-snap-${tag}`,
    hostPort,
    memoryMb: BENCH_VM_MEMORY_MB,
    vcpus: BENCH_VM_VCPUS,
    ...(incomingFile ? { incomingFile } : {}),
  });

  // The snapshots: each of a booted guest that serves.
  const srcPort = await freePort();
  const source = await driver.start(spec('src', srcPort));
  const undoSource = track(source);
  await serving(srcPort);
  const taken = await driver.snapshot(source, corralFile);
  await undoSource();
  const rawSrcPort = await freePort();
  const rawSource = await startRawVm(rawOptions('src', rawSrcPort));
  const undoRawSource = trackRaw(rawSource);
  await serving(rawSrcPort, () => (rawSource.exit ? 'raw source qemu exited' : undefined));
  const rawTaken = await rawSnapshot(rawSource, rawFile);
  await undoRawSource();
  log(`  qemu snapshots taken: Corral ${formatMs(taken.durationMs)} (${(taken.bytes / 1e6).toFixed(0)} MB), raw ${formatMs(rawTaken.ms)} (${(rawTaken.bytes / 1e6).toFixed(0)} MB)`);

  const result: SnapshotBenchResult = {
    corralCold: [],
    corralRestore: [],
    rawCold: [],
    rawRestore: [],
    corralSnapshot: { ms: taken.durationMs, bytes: taken.bytes },
    rawSnapshot: { ms: rawTaken.ms, bytes: rawTaken.bytes },
  };
  const kinds: Array<{ into: number[]; run: (tag: string) => Promise<number> }> = [
    {
      into: result.corralCold,
      run: async (tag) => {
        const port = await freePort();
        const t0 = now();
        const handle = await driver.start(spec(tag, port));
        const undo = track(handle);
        await serving(port);
        const ms = now() - t0;
        await undo();
        return ms;
      },
    },
    {
      into: result.corralRestore,
      run: async (tag) => {
        const port = await freePort();
        const t0 = now();
        const handle = await driver.restoreFrom(corralFile, spec(tag, port));
        const undo = track(handle);
        await serving(port);
        const ms = now() - t0;
        await undo();
        return ms;
      },
    },
    {
      into: result.rawCold,
      run: async (tag) => {
        const port = await freePort();
        const t0 = now();
        const vm = await startRawVm(rawOptions(tag, port));
        const undo = trackRaw(vm);
        await serving(port, () => (vm.exit ? 'raw qemu exited' : undefined));
        const ms = now() - t0;
        await undo();
        return ms;
      },
    },
    {
      into: result.rawRestore,
      run: async (tag) => {
        const port = await freePort();
        const t0 = now();
        const vm = await startRawVm(rawOptions(tag, port, rawFile));
        const undo = trackRaw(vm);
        await rawFinishIncoming(vm);
        await serving(port, () => (vm.exit ? 'raw qemu exited' : undefined));
        const ms = now() - t0;
        await undo();
        return ms;
      },
    },
  ];
  for (let i = 0; i < n; i++) {
    const order = i % 2 === 0 ? kinds : [...kinds].reverse();
    for (const [k, kind] of order.entries()) {
      cleanup.throwIfAborted();
      kind.into.push(await kind.run(`r${i}k${k}`));
    }
    log(`  qemu restore round ${i + 1}/${n}: Corral cold ${formatMs(result.corralCold.at(-1) as number)}, restore ${formatMs(result.corralRestore.at(-1) as number)}; raw cold ${formatMs(result.rawCold.at(-1) as number)}, restore ${formatMs(result.rawRestore.at(-1) as number)}`);
  }
  return result;
}

export function snapshotTable(r: SnapshotBenchResult): string {
  const row = (label: string, corral: number[], raw: number[]) =>
    `| ${label} | ${corral.length} | ${formatMs(percentile(corral, 50))} | ${formatMs(percentile(corral, 95))} | ${formatMs(percentile(raw, 50))} | ${formatMs(percentile(raw, 95))} | ${ratio(percentile(corral, 50), percentile(raw, 50))} |`;
  return [
    '| qemu (tcg, 256 MiB) | N | Corral p50 | p95 | raw p50 | p95 | Corral/raw (p50) |',
    '|---|---:|---:|---:|---:|---:|---:|',
    row('cold boot → serving', r.corralCold, r.rawCold),
    row('restore from snapshot → serving', r.corralRestore, r.rawRestore),
    `| cold boot / restore (p50) | | ${ratio(percentile(r.corralCold, 50), percentile(r.corralRestore, 50))} faster | | ${ratio(percentile(r.rawCold, 50), percentile(r.rawRestore, 50))} faster | | |`,
  ].join('\n');
}

export function snapshotNote(r: SnapshotBenchResult): string {
  return `Snapshot of the running guest (once, untimed by the table): Corral \`snapshot\` ${formatMs(r.corralSnapshot.ms)} for ${(r.corralSnapshot.bytes / 1e6).toFixed(0)} MB; raw QMP stop + migrate ${formatMs(r.rawSnapshot.ms)} for ${(r.rawSnapshot.bytes / 1e6).toFixed(0)} MB.`;
}
