import { readFileSync } from 'node:fs';
import type { Ulimit } from './commands';

// Containers inherit at most the hard rlimits of whoever starts them; raising
// them needs a privilege these hosts do not grant even to root. Rootful
// podman asks for 1048576 open files and processes unless told otherwise, so
// where the agent's hard limits are lower every run needs explicit ulimits,
// no higher than those limits.

/** What rootful podman sets when no --ulimit is given. */
export const PODMAN_DEFAULT_RLIMIT = 1_048_576;

export interface HardLimits {
  nofile: number;
  nproc: number;
}

/** Hard limits from a /proc/<pid>/limits text; Infinity for "unlimited", undefined when absent. */
export function parseHardLimits(text: string): Partial<HardLimits> {
  const out: Partial<HardLimits> = {};
  for (const line of text.split('\n')) {
    const match = /^Max (open files|processes)\s+(\S+)\s+(\S+)/.exec(line);
    if (!match) continue;
    const hard = match[3] === 'unlimited' ? Infinity : Number(match[3]);
    if (!Number.isFinite(hard) && hard !== Infinity) continue;
    if (match[1] === 'open files') out.nofile = hard;
    else out.nproc = hard;
  }
  return out;
}

/** The agent's own hard limits, which podman (its child) inherits. */
export function readHardLimits(path = '/proc/self/limits'): Partial<HardLimits> {
  try {
    return parseHardLimits(readFileSync(path, 'utf8'));
  } catch {
    return {};
  }
}

/** A configured limit lowered to what the host permits. */
export function clampUlimit(wanted: Ulimit, hard: number | undefined): Ulimit {
  if (hard === undefined) return wanted;
  return { soft: Math.min(wanted.soft, hard), hard: Math.min(wanted.hard, hard) };
}

/** Whether podman's default rlimits would be refused here. */
export function explicitUlimitsRequired(limits: Partial<HardLimits>): boolean {
  return (limits.nofile ?? Infinity) < PODMAN_DEFAULT_RLIMIT || (limits.nproc ?? Infinity) < PODMAN_DEFAULT_RLIMIT;
}
