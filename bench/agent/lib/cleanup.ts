import { readdirSync, readFileSync } from 'node:fs';
import { isProcessAlive, killProcessGroup } from '@corral/exec';

// Everything a benchmark creates (containers, qemu and other processes,
// files) is registered here as it is made, and undone in reverse order at
// the end of the run, also after a failure or an interrupt. Workloads run in
// their own process groups, so a Ctrl-C at the terminal does not reach
// them: without this they would outlive the benchmark.
//
// On SIGINT/SIGTERM the run is aborted rather than torn down under its own
// feet: the step in progress notices (`throwIfAborted`, `aborted`), the run
// unwinds to its `finally`, and that cleans up, so nothing is created after
// the cleanup has passed. A second signal cleans up at once and exits.

type Step = { what: string; run: () => Promise<void> | void };

export class BenchAborted extends Error {
  override readonly name = 'BenchAborted';
  constructor(signal: string) {
    super(`interrupted by ${signal}`);
  }
}

export class Cleanup {
  private readonly steps: Step[] = [];
  private running?: Promise<string[]>;
  private signal?: NodeJS.Signals;

  /** Registers an undo step; the returned function runs it now (and only once). */
  add(what: string, run: () => Promise<void> | void): () => Promise<void> {
    const step: Step = { what, run };
    this.steps.push(step);
    return async () => {
      const at = this.steps.indexOf(step);
      if (at < 0) return;
      this.steps.splice(at, 1);
      await step.run();
    };
  }

  get aborted(): boolean {
    return this.signal !== undefined;
  }

  throwIfAborted(): void {
    if (this.signal) throw new BenchAborted(this.signal);
  }

  /** Runs every step still registered, newest first; failures are collected, not thrown. */
  runAll(): Promise<string[]> {
    this.running ??= (async () => {
      const failures: string[] = [];
      while (this.steps.length > 0) {
        const step = this.steps.pop() as Step;
        try {
          await step.run();
        } catch (err) {
          failures.push(`${step.what}: ${(err as Error).message}`);
        }
      }
      this.running = undefined;
      return failures;
    })();
    return this.running;
  }

  /** First SIGINT/SIGTERM aborts the run (which then cleans up); a second cleans up now and exits 130/143. */
  onSignals(): () => void {
    const handler = (signal: NodeJS.Signals) => {
      if (!this.signal) {
        this.signal = signal;
        console.error(`\n${signal}: stopping after the current step, then removing what the run created (again to force)…`);
        return;
      }
      console.error(`\n${signal} again: cleaning up now…`);
      void this.runAll().then((failures) => {
        for (const failure of failures) console.error(`cleanup: ${failure}`);
        process.exit(signal === 'SIGINT' ? 130 : 143);
      });
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
    return () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    };
  }
}

/** Pids of processes whose command line contains `needle` (e.g. the run's work dir). */
export function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ').includes(needle)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** SIGKILLs every process (and its group) whose command line mentions `needle`; returns how many there were. */
export function killProcessesMentioning(needle: string): number {
  const pids = processesMentioning(needle);
  for (const pid of pids) {
    // Workloads lead their own group: kill the group, then the pid itself in case it is not a leader.
    killProcessGroup(pid, 'SIGKILL');
    if (isProcessAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // exited meanwhile
      }
    }
  }
  return pids.length;
}
