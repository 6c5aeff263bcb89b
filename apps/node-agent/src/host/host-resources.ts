import { statfs } from 'node:fs/promises';
import { availableParallelism, freemem, loadavg, totalmem } from 'node:os';
import type { Resources } from '@corral/proto';

// What this host offers and uses, in the units of corral.common.v1.Resources.
// Disk is measured on the file system of the agent's state dir, where
// workload directories and volumes live.

const MiB = 1024 * 1024;

export async function measureCapacity(stateDir: string): Promise<Resources> {
  const disk = await statfs(stateDir);
  return {
    cpuMillis: availableParallelism() * 1000,
    memoryMb: Math.floor(totalmem() / MiB),
    diskMb: Math.floor((disk.blocks * disk.bsize) / MiB),
  };
}

/**
 * CPU use is the 1-minute load average (runnable tasks ≈ busy cores),
 * capped at the core count: cheap, and needs no sampling between calls.
 */
export async function measureUsage(stateDir: string): Promise<Resources> {
  const disk = await statfs(stateDir);
  const cores = availableParallelism();
  return {
    cpuMillis: Math.round(Math.min(loadavg()[0], cores) * 1000),
    memoryMb: Math.floor((totalmem() - freemem()) / MiB),
    diskMb: Math.floor(((disk.blocks - disk.bfree) * disk.bsize) / MiB),
  };
}
