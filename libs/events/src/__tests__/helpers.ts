// Test helpers shared by this lib's specs. libs/events cannot use
// @corral/testing (that lib depends on this one), so the NATS_URL skip rule
// is repeated here in its smallest form.

import { randomBytes } from 'node:crypto';
import type { BusLogger } from '../event-bus';

/** NATS_URL, or undefined after printing why the caller will skip. */
export function natsUrlFromEnv(suite: string): string | undefined {
  const url = process.env['NATS_URL'];
  if (!url) {
    console.log(`[skip] ${suite}: NATS_URL is not set (e.g. NATS_URL=nats://127.0.0.1:4222)`);
    return undefined;
  }
  return url;
}

/** A subject-safe id unique to this run, so tests sharing a server do not see each other. */
export function uniqueId(label: string): string {
  return `${label}-${process.pid}-${randomBytes(6).toString('hex')}`;
}

export interface LogEntry {
  readonly level: 'info' | 'warn' | 'error';
  readonly message: string;
  readonly meta?: Record<string, unknown>;
}

/** A logger that keeps what it is given, for assertions. */
export function recordingLogger(): BusLogger & { readonly entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  return {
    entries,
    info: (message, meta) => entries.push({ level: 'info', message, meta }),
    warn: (message, meta) => entries.push({ level: 'warn', message, meta }),
    error: (message, meta) => entries.push({ level: 'error', message, meta }),
  };
}

/** Polls `check` until it returns true; fails with `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
