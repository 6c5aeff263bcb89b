import { InvalidArgumentError } from '@corral/domain';

// A registration token's scope: which hosts may register with it. Checked
// before the token is claimed, so a host outside the scope leaves it unused.

export interface TokenScope {
  /** Glob over the host name (`*` any run, `?` one character), case-insensitive; null for any name. */
  namePattern: string | null;
  /** Labels the host must register with, each with exactly this value. */
  labels: Record<string, string>;
}

export const ANY_HOST: TokenScope = { namePattern: null, labels: {} };

const PATTERN = /^[A-Za-z0-9.*?-]{1,253}$/;
const MAX_LABELS = 64;
const MAX_LABEL_LENGTH = 253;

/** A scope from request fields; empty fields mean no restriction. */
export function parseTokenScope(input: { namePattern?: string; labels?: Record<string, string> } | undefined): TokenScope {
  const namePattern = input?.namePattern?.trim() || null;
  if (namePattern !== null && !PATTERN.test(namePattern)) {
    throw new InvalidArgumentError('scope.namePattern must be a host name glob (letters, digits, ".", "-", "*", "?")', { field: 'scope.namePattern' });
  }
  const labels = input?.labels ?? {};
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw new InvalidArgumentError(`scope.labels: at most ${MAX_LABELS} labels`, { field: 'scope.labels' });
  for (const [key, value] of entries) {
    if (!key || key.length > MAX_LABEL_LENGTH) throw new InvalidArgumentError(`scope.labels keys must be 1 to ${MAX_LABEL_LENGTH} characters`, { field: 'scope.labels' });
    if (typeof value !== 'string' || value.length > MAX_LABEL_LENGTH) {
      throw new InvalidArgumentError(`scope.labels.${key} must be at most ${MAX_LABEL_LENGTH} characters`, { field: `scope.labels.${key}` });
    }
  }
  return { namePattern, labels: { ...labels } };
}

/** A stored scope (columns name_pattern and required_labels). */
export function storedTokenScope(row: { namePattern: string | null; requiredLabels: unknown }): TokenScope {
  const labels: Record<string, string> = {};
  if (row.requiredLabels && typeof row.requiredLabels === 'object' && !Array.isArray(row.requiredLabels)) {
    for (const [key, value] of Object.entries(row.requiredLabels as Record<string, unknown>)) labels[key] = String(value);
  }
  return { namePattern: row.namePattern, labels };
}

export function hostInScope(scope: TokenScope, host: { name: string; labels: Record<string, string> }): boolean {
  if (scope.namePattern !== null && !globMatches(scope.namePattern, host.name)) return false;
  return Object.entries(scope.labels).every(([key, value]) => Object.prototype.hasOwnProperty.call(host.labels, key) && host.labels[key] === value);
}

/**
 * `*` and `?` glob, case-insensitive, whole string. Iterative with one
 * backtrack point, so linear-ish in the input whatever the pattern (no
 * regular expression built from user input).
 */
export function globMatches(pattern: string, text: string): boolean {
  const p = pattern.toLowerCase();
  const t = text.toLowerCase();
  let pi = 0;
  let ti = 0;
  let star = -1;
  let mark = 0;
  while (ti < t.length) {
    if (pi < p.length && (p[pi] === '?' || p[pi] === t[ti])) {
      pi++;
      ti++;
    } else if (pi < p.length && p[pi] === '*') {
      star = pi++;
      mark = ti;
    } else if (star !== -1) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.length && p[pi] === '*') pi++;
  return pi === p.length;
}
