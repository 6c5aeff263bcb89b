// The node agent benchmark, one command (DESIGN §3, issue 3):
//
//   npx tsx bench/agent/run.ts                         # everything, defaults (a few minutes)
//   npx tsx bench/agent/run.ts --parts create,pause --drivers podman --n 20
//   npx tsx bench/agent/run.ts --help
//
// Parts: clone (clone-bench.ts), create (create→serving per driver), pause
// (pause/resume per driver), snapshot (qemu restore→serving vs cold boot).
// Corral is always measured next to a raw baseline in the same run, sample
// by sample, alternating which goes first; ratios are what to compare on
// these shared 2-core machines. Prints the tables and appends one dated
// section to bench/RESULTS.md. Everything the run creates (containers, qemu
// and other processes, files, ports) is removed at the end, on failure and
// on Ctrl-C.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createExecutor, resolveProgram } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { ensureBusyboxImage, ensureMicrovmImage, microvmImageUnavailableReason, podmanUnavailableReason, type MicrovmImage } from '@corral/testing';
import { startBenchAgent, BENCH_VM_MEMORY_MB, BENCH_VM_VCPUS } from './agent-under-test';
import { CLONE_WARMUP, cloneBenchUnavailableReason, runCloneBench } from './clone-bench';
import { benchCreate, benchPause, createTable, driverCase, pauseTable, PAUSE_RAW_LABELS, type CreateRow, type LifecycleContext, type PauseRow } from './lifecycle-bench';
import { parseArgs, USAGE, type BenchOptions, type DriverName } from './lib/args';
import { Cleanup, killProcessesMentioning, processesMentioning } from './lib/cleanup';
import { machineLine } from './lib/machine';
import { AGENT_DESCRIPTION, appendResults, CLONE_DESCRIPTION, RESULTS_PATH } from './lib/results';
import { benchSnapshot, snapshotNote, snapshotTable } from './snapshot-bench';
import { podmanRunContainers, removeRunContainers } from './raw/podman';

const log = (line: string) => console.log(line);

interface Availability {
  drivers: DriverName[];
  skipped: Partial<Record<DriverName, string>>;
  qemuPath?: string;
  image?: MicrovmImage;
}

/** Which drivers can run here; builds the test images (cached) for those that can. */
async function prepareDrivers(wanted: readonly DriverName[]): Promise<Availability> {
  const out: Availability = { drivers: [], skipped: {} };
  for (const driver of wanted) {
    if (driver === 'process') {
      if (!resolveProgram('busybox', process.env.PATH)) out.skipped.process = 'busybox is not installed (Debian package busybox-static)';
      else out.drivers.push('process');
    } else if (driver === 'podman') {
      const reason = podmanUnavailableReason();
      if (reason) {
        out.skipped.podman = reason;
        continue;
      }
      await ensureBusyboxImage();
      out.drivers.push('podman');
    } else {
      const qemuPath = resolveProgram('qemu-system-x86_64', `${process.env.PATH ?? ''}:/usr/bin:/usr/local/bin`);
      const reason = !qemuPath ? 'qemu-system-x86_64 is not installed (Debian package qemu-system-x86)' : microvmImageUnavailableReason();
      if (reason) {
        out.skipped.qemu = reason;
        continue;
      }
      log('preparing the microVM image (cached in .cache/microvm)…');
      out.image = await ensureMicrovmImage();
      out.qemuPath = qemuPath;
      out.drivers.push('qemu');
    }
  }
  return out;
}

function failureRow<T extends { driver: DriverName; rawLabel: string; error?: string }>(base: Omit<T, 'error'>, err: unknown): T {
  const message = (err as Error).message?.split('\n')[0]?.slice(0, 200) ?? String(err);
  return { ...base, error: `failed: ${message.replaceAll('|', '/')}` } as T;
}

async function run(options: BenchOptions): Promise<{ section: string; failed: boolean; aborted: boolean }> {
  const machine = await machineLine(options.dir);
  const cleanup = new Cleanup();
  const offSignals = cleanup.onSignals();
  // Workloads are detached children that do not hold the event loop: while
  // only waiting for one to exit, Node would otherwise end the run early,
  // skipping the cleanup.
  const keepAlive = setInterval(() => undefined, 60_000);
  const runId = `b${Date.now().toString(36)}`;
  const root = mkdtempSync(join(options.dir, 'corral-agent-bench-'));
  const podman = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
  // Registered first, so they run last: the sweeps catch whatever a failed step left.
  cleanup.add(`remove ${root}`, () => rmSync(root, { recursive: true, force: true }));
  cleanup.add('remove podman containers of this run', async () => {
    if (podman.resolve('podman')) await removeRunContainers(podman, runId);
  });
  cleanup.add('kill processes of this run', () => void killProcessesMentioning(root));

  const parts: string[] = [];
  let failed = false;
  log(`\nagent bench ${runId}: parts ${options.parts.join(', ')}; work dir ${root}\n${machine}\n`);
  try {
    if (options.parts.includes('clone')) {
      const reason = cloneBenchUnavailableReason();
      let text: string;
      if (reason) {
        text = `skipped: ${reason}`;
      } else {
        log(`clone: ${options.cloneN} clones per size…`);
        try {
          const clone = await runCloneBench({ n: options.cloneN, dir: options.dir, cleanup });
          text = `${clone.table}\n\n${clone.flatness}`;
        } catch (err) {
          if (cleanup.aborted) throw err;
          failed = true;
          text = `failed: ${(err as Error).message}`;
        }
      }
      parts.push(`### Clone a root disk (\`Qcow2VolumeManager.clone\` vs \`qemu-img create -b\`), N=${options.cloneN} per size after ${CLONE_WARMUP} warm-up\n\n${text}`);
      log(`\n${text}\n`);
    }

    cleanup.throwIfAborted();
    const lifecycle = options.parts.includes('create') || options.parts.includes('pause');
    const needed = new Set<DriverName>(lifecycle ? options.drivers : []);
    if (options.parts.includes('snapshot')) needed.add('qemu');
    const available = await prepareDrivers([...needed]);
    const lifecycleDrivers = available.drivers.filter((d) => options.drivers.includes(d));
    const skippedNote = Object.entries(available.skipped).map(([d, why]) => `${d} skipped: ${why}`);
    for (const note of skippedNote) log(note);

    if (lifecycle && lifecycleDrivers.length > 0) {
      const bench = await startBenchAgent(root, lifecycleDrivers);
      const stopAgent = cleanup.add('stop the node agent', () => bench.stop());
      const ctx: LifecycleContext = { root, runId, cleanup, bench, podman, qemuPath: available.qemuPath, image: available.image, notes: [] };
      const cases = lifecycleDrivers.map((d) => driverCase(ctx, d));
      if (options.parts.includes('create')) {
        const rows: CreateRow[] = [];
        for (const c of cases) {
          const n = c.driver === 'qemu' ? options.vmN : options.n;
          log(`create→serving: ${c.driver}, ${n} per side…`);
          try {
            rows.push(await benchCreate(c, n, log));
          } catch (err) {
            if (cleanup.aborted) throw err;
            failed = true;
            rows.push(failureRow<CreateRow>({ driver: c.driver, rawLabel: c.rawLabel, corral: [], raw: [], rpc: [] }, err));
          }
        }
        const table = createTable(rows);
        log(`\n${table}\n${ctx.notes.join('\n')}`);
        parts.push(
          [
            `### Create → serving (StartWorkload until HTTP answers on the allocated host port), N=${options.n} per side (qemu ${options.vmN}) after 1 warm-up`,
            '',
            `Corral: the agent's gRPC StartWorkload (in-process agent, real drivers) until GET / on the workload's host port returns its page; raw: the same workload started directly until the same. qemu: tcg, ${BENCH_VM_MEMORY_MB} MiB, ${BENCH_VM_VCPUS} vCPU, q35, direct kernel boot. "StartWorkload answered" is when the RPC returned (for qemu: once QMP answers, long before the guest serves).`,
            '',
            table,
            ...(ctx.notes.length || skippedNote.length ? ['', ...[...ctx.notes, ...skippedNote].map((note) => `- ${note}`)] : []),
          ].join('\n'),
        );
      }
      if (options.parts.includes('pause')) {
        const rows: PauseRow[] = [];
        for (const c of cases) {
          log(`pause/resume: ${c.driver}, ${options.pauseN} cycles per side…`);
          try {
            rows.push(await benchPause(c, options.pauseN, log));
          } catch (err) {
            if (cleanup.aborted) throw err;
            failed = true;
            rows.push(failureRow<PauseRow>({ driver: c.driver, rawLabel: PAUSE_RAW_LABELS[c.driver], corralPause: [], corralResume: [], rawPause: [], rawResume: [] }, err));
          }
        }
        const table = pauseTable(rows);
        log(`\n${table}\n`);
        parts.push(
          [
            `### Pause / resume, N=${options.pauseN} cycles per side after 2 warm-up`,
            '',
            "Corral: the agent's gRPC PauseWorkload / ResumeWorkload (driver call, then the workload record persisted and the state change published); raw: the bare runtime operation. After each pause the runtime is asked whether it is paused, after each resume the page must be served again (both untimed).",
            '',
            table,
          ].join('\n'),
        );
      }
      await stopAgent();
    }

    cleanup.throwIfAborted();
    if (options.parts.includes('snapshot')) {
      let text: string;
      if (!available.drivers.includes('qemu') || !available.qemuPath || !available.image) {
        text = `skipped: ${available.skipped.qemu ?? 'qemu is not available'}`;
      } else {
        log(`snapshot: ${options.vmN} rounds of cold boot and restore, Corral and raw…`);
        try {
          const result = await benchSnapshot({ root, cleanup, qemuPath: available.qemuPath, image: available.image, runId }, options.vmN, log);
          text = `${snapshotTable(result)}\n\n${snapshotNote(result)}`;
        } catch (err) {
          if (cleanup.aborted) throw err;
          failed = true;
          text = `failed: ${(err as Error).message}`;
        }
      }
      log(`\n${text}\n`);
      parts.push(
        [
          `### qemu memory snapshot: restore → serving vs cold boot → serving, N=${options.vmN} each`,
          '',
          "At the driver (`QemuDriver.snapshot` / `restoreFrom`; the agent's API does not offer snapshots yet) and with bare qemu (`migrate` to `exec:cat`, `-incoming` + `cont`), each round running the four kinds back to back.",
          '',
          text,
        ].join('\n'),
      );
    }
  } catch (err) {
    // Interrupted: what was measured is dropped; the cleanup below still runs.
    if (!cleanup.aborted) throw err;
  } finally {
    const failures = await cleanup.runAll();
    offSignals();
    clearInterval(keepAlive);
    for (const f of failures) log(`cleanup: ${f}`);
    const leftProcesses = processesMentioning(root);
    const leftContainers = podman.resolve('podman') ? await podman.run(podmanRunContainers(runId)).catch(() => []) : [];
    const leftFiles = existsSync(root);
    if (leftProcesses.length || leftContainers.length || leftFiles) {
      failed = true;
      log(`cleanup: LEFT BEHIND ${leftProcesses.length} processes, ${leftContainers.length} containers${leftFiles ? `, ${root}` : ''}`);
    } else {
      log('cleanup: no container, process or file of this run is left');
    }
  }

  const section = [`## agent-bench — ${new Date().toISOString()}`, '', `${machine}. Command: \`${['npx tsx bench/agent/run.ts', ...process.argv.slice(2)].join(' ')}\`.`, '', parts.join('\n\n')].join('\n');
  return { section, failed, aborted: cleanup.aborted };
}

async function main(): Promise<void> {
  let options: BenchOptions;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (options.help) {
    console.log(USAGE);
    return;
  }
  const { section, failed, aborted } = await run(options);
  if (aborted) {
    log('interrupted: nothing appended');
    process.exitCode = 130;
    return;
  }
  if (options.append) {
    appendResults(section, [CLONE_DESCRIPTION, AGENT_DESCRIPTION]);
    log(`appended to ${RESULTS_PATH}`);
  }
  if (failed) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
