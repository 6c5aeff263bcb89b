// NATS helpers for tests. Integration tests take the server from NATS_URL
// (DESIGN §4: there is no Docker to start one) and skip, saying why, when it
// is not set. This file uses @corral/events only; the nats client is not
// imported outside libs/events.

import { randomBytes } from 'node:crypto';
import { assertSubjectToken } from '@corral/events';

const announced = new Set<string>();

/**
 * NATS_URL when set; otherwise prints why `suite` is skipped (once per
 * suite name) and returns undefined.
 */
export function natsUrlOrSkip(suite = 'NATS integration tests'): string | undefined {
  const url = process.env['NATS_URL']?.trim();
  if (url) return url;
  if (!announced.has(suite)) {
    announced.add(suite);
    console.log(`[skip] ${suite}: NATS_URL is not set (e.g. NATS_URL=nats://127.0.0.1:4222)`);
  }
  return undefined;
}

/**
 * `describe` that runs only when NATS_URL is set and is reported as skipped
 * otherwise. `fn` receives the URL (an empty string when skipped, in which
 * case none of its tests run).
 */
export function describeWithNats(name: string, fn: (natsUrl: string) => void): void {
  const url = natsUrlOrSkip(name);
  if (url) describe(name, () => fn(url));
  else describe.skip(name, () => fn(''));
}

/**
 * One subject token unique to this test run, e.g. for a host or workload id
 * used as a key on a NATS server shared with other test processes.
 */
export function uniqueSubjectToken(label = 'test'): string {
  assertSubjectToken(label, 'label');
  return `${label}-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * A subject prefix unique to this test run (`test.<label>.<unique>`), to
 * publish and subscribe on raw subjects without seeing other runs' traffic.
 */
export function uniqueSubjectPrefix(label = 'run'): string {
  return `test.${uniqueSubjectToken(label)}`;
}
