// Each system the launcher starts gets its own NATS subject namespace, so
// systems sharing one NATS server (e2e suites on the CI NATS, two dev
// systems on one machine) cannot hear each other's events. It is kept in
// the data dir so a restart of the same system keeps it (agents started
// outside the launcher can be given it once).

import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { subjectNamespace } from '@corral/events';

export const NATS_NAMESPACE_FILE = 'nats-subject-namespace';

/** `given` (checked; '' for bare subjects), else the one kept in `dataDir`, made on first use. */
export function natsSubjectNamespaceFor(dataDir: string, given: string | undefined): string {
  if (given !== undefined) return subjectNamespace(given).name;
  const path = join(dataDir, NATS_NAMESPACE_FILE);
  if (existsSync(path)) return subjectNamespace(readFileSync(path, 'utf8').trim()).name;
  const made = `corral-${randomBytes(6).toString('hex')}`;
  writeFileSync(path, made + '\n');
  return made;
}
