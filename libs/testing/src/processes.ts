import { readFileSync, readdirSync } from 'node:fs';

// What tests check is left running after a teardown: processes found by
// their command line in /proc (no program is run to list them).

/** The pids of processes whose command line contains every one of `parts`. */
export function processesWithCommandLine(...parts: string[]): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (parts.every((part) => cmdline.includes(part))) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** qemu processes whose command line mentions `dir` (a test's state directory). */
export function qemuProcessesUnder(dir: string): number[] {
  return processesWithCommandLine('qemu-system', dir);
}
