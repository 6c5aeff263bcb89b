import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

// bench/RESULTS.md: a description of each benchmark at the top, then one
// dated section per run, appended. The descriptions are kept here so that a
// missing file (or one from before a benchmark existed) gets them back.

export const RESULTS_PATH = resolve(__dirname, '..', '..', 'RESULTS.md');

const PREAMBLE = [
  '# Benchmark results',
  '',
  'Each benchmark appends one dated section per run; nothing here is edited by hand.',
  'A section names the benchmark, the machine (`nproc`, `uname -r`, CPU model from',
  '/proc/cpuinfo, Node and tool versions, filesystem of the work dir) and a table.',
  'Compare ratios measured in the same run, not absolute times across runs: the',
  'machines here have 2 cores and share their hosts.',
  '',
].join('\n');

export const CLONE_DESCRIPTION = [
  '- `bench/agent/clone-bench.ts` (`npx tsx bench/agent/clone-bench.ts`): time to create a',
  '  copy-on-write root disk (`Qcow2VolumeManager.clone`) for sparse raw bases of',
  '  100 MiB, 1 GiB and 10 GiB, N clones each, p50/p95, next to the bare',
  '  `qemu-img create -f qcow2 -b` it wraps, interleaved in the same run. The',
  "  Corral/raw ratio is the cost of Corral's bookkeeping (lock, base check, two",
  "  fsync'd atomic state writes). Clone time should not grow with the base size.",
].join('\n');

export const AGENT_DESCRIPTION = [
  '- `bench/agent/run.ts` (`npx tsx bench/agent/run.ts`, `--help` for parts and N): the',
  '  whole agent benchmark in one section — the clone bench above, then per driver',
  '  (process, podman, qemu microVM under tcg) the time an operator waits from the',
  "  node agent's gRPC `StartWorkload` (an in-process agent with the real drivers)",
  '  until the workload serves HTTP on its allocated host port, next to the same',
  '  workload started raw (`podman run -d … -p 127.0.0.1:H:C`, a bare',
  '  `qemu-system-x86_64` with the same kernel, initramfs and hostfwd, a plain',
  '  spawn of the same command), interleaved; `PauseWorkload`/`ResumeWorkload`',
  '  next to raw `podman pause`/`unpause`, a raw QMP `stop`/`cont` and',
  '  SIGSTOP/SIGCONT; and for qemu, restore from a memory snapshot → serving next',
  '  to a cold boot → serving. Each pause is checked in the runtime (podman',
  '  inspect, QMP query-status, /proc state) and each resume by HTTP, outside the',
  '  timed part. Ratios are Corral/raw at p50.',
].join('\n');

/**
 * Makes sure RESULTS.md exists and describes `descriptions` at the top (a
 * missing one is inserted after the others, before the first section),
 * then appends `section`.
 */
export function appendResults(section: string, descriptions: readonly string[], path = RESULTS_PATH): void {
  let text = existsSync(path) ? readFileSync(path, 'utf8') : `${PREAMBLE}\n${CLONE_DESCRIPTION}\n`;
  for (const description of descriptions) {
    if (text.includes(description.split('\n')[0])) continue;
    const firstSection = text.search(/^## /m);
    if (firstSection < 0) {
      text = `${text.trimEnd()}\n${description}\n`;
    } else {
      const head = text.slice(0, firstSection).trimEnd();
      text = `${head}\n${description}\n\n${text.slice(firstSection)}`;
    }
  }
  writeFileSync(path, `${text.trimEnd()}\n\n${section.trim()}\n`);
}
