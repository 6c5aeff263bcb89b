// Fields whose values must never reach a log line, matched on the key name
// anywhere in a log entry (nested objects and arrays included). `env` is on
// the list because workload environments carry tenants' secrets.
export const SECRET_KEY_PATTERN =
  /(pass(word)?|secret|token|authorization|api[-_]?key|credential|private[-_]?key|cookie|^env$|^dsn$)/i;

export const REDACTED = '[REDACTED]';

export function redact(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (depth > 8) return '[Truncated]';
  if (seen.has(value)) return '[Circular]';
  seen.add(value);
  if (value instanceof Error) {
    return { name: value.name, message: value.message, stack: value.stack, ...(redact({ ...value }, depth + 1, seen) as object) };
  }
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1, seen));
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return `[Buffer ${value.length} bytes]`;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    out[key] = SECRET_KEY_PATTERN.test(key) && v !== undefined && v !== null && v !== '' ? REDACTED : redact(v, depth + 1, seen);
  }
  return out;
}
