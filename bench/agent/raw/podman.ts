import { execErrorFromResult, type Command, type Executor } from '@corral/exec';
import type { Ulimit } from '../../../apps/node-agent/src/drivers/podman/commands';

// The podman baseline: the `podman run -d` an operator would type for the
// same container — same image, command, runtime, ulimits and port publish —
// without Corral's labels, log driver, env plumbing and bookkeeping.

export const BENCH_RUN_LABEL = 'corral-bench-run';

function podman(args: string[], timeoutMs = 60_000): Command<string> {
  return { program: 'podman', args, timeoutMs, parse: (stdout) => stdout.trim(), mapError: execErrorFromResult };
}

export interface RawPodmanRun {
  image: string;
  command: string[];
  hostPort: number;
  guestPort: number;
  runtime: string;
  ulimits: { nofile: Ulimit; nproc: Ulimit };
  runId: string;
}

/** `podman run -d --runtime R --ulimit … -p 127.0.0.1:H:C IMAGE CMD…`; parses to the container id. */
export function rawPodmanRun(run: RawPodmanRun): Command<string> {
  return podman([
    'run',
    '-d',
    '--runtime',
    run.runtime,
    '--ulimit',
    `nofile=${run.ulimits.nofile.soft}:${run.ulimits.nofile.hard}`,
    '--ulimit',
    `nproc=${run.ulimits.nproc.soft}:${run.ulimits.nproc.hard}`,
    // Only so that cleanup can find it; a label costs nothing measurable.
    '--label',
    `${BENCH_RUN_LABEL}=${run.runId}`,
    '-p',
    `127.0.0.1:${run.hostPort}:${run.guestPort}`,
    run.image,
    ...run.command,
  ]);
}

export const rawPodmanPause = (id: string) => podman(['pause', id]);
export const rawPodmanUnpause = (id: string) => podman(['unpause', id]);
export const podmanRemove = (ids: string[]) => podman(['rm', '--force', '--time', '0', ...ids]);
export const podmanStatus = (id: string) => podman(['container', 'inspect', '--format', '{{.State.Status}}', id]);
/** Ids of every container (any state) labelled with this run. */
export const podmanRunContainers = (runId: string): Command<string[]> => ({
  ...podman(['ps', '--all', '--quiet', '--filter', `label=${BENCH_RUN_LABEL}=${runId}`]),
  parse: (stdout) => stdout.split('\n').map((l) => l.trim()).filter(Boolean),
});

/** Removes every container of this run; returns how many there were. */
export async function removeRunContainers(executor: Executor, runId: string): Promise<number> {
  const ids = await executor.run(podmanRunContainers(runId));
  if (ids.length > 0) await executor.run(podmanRemove(ids));
  return ids.length;
}
