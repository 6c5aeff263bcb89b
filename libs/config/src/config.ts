// One typed, validated config per service, read once at start-up. Every
// problem is reported with the variable's name, all at once, before the
// service does anything else.

export type Env = Record<string, string | undefined>;

interface FieldSpec<T> {
  variable: string;
  /** Never printed: describeConfig shows it as "(set)". */
  secret?: boolean;
  parse(raw: string | undefined): T;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
  }
}

class FieldProblem extends Error {}

type Common<T> = { default?: T; secret?: boolean };

function field<T>(variable: string, opts: Common<T>, parse: (raw: string) => T): FieldSpec<T> {
  return {
    variable,
    secret: opts.secret,
    parse(raw) {
      if (raw === undefined || raw === '') {
        if ('default' in opts) return opts.default as T;
        throw new FieldProblem('is required');
      }
      return parse(raw.trim());
    },
  };
}

export function str(variable: string, opts: Common<string> & { pattern?: RegExp } = {}): FieldSpec<string> {
  return field(variable, opts, (raw) => {
    if (opts.pattern && !opts.pattern.test(raw)) throw new FieldProblem(`must match ${opts.pattern}`);
    return raw;
  });
}

export function optionalStr(variable: string, opts: { secret?: boolean } = {}): FieldSpec<string | undefined> {
  return field<string | undefined>(variable, { default: undefined, ...opts }, (raw) => raw);
}

export function int(variable: string, opts: Common<number> & { min?: number; max?: number } = {}): FieldSpec<number> {
  return field(variable, opts, (raw) => {
    if (!/^-?\d+$/.test(raw)) throw new FieldProblem(`must be an integer, got "${raw}"`);
    const value = Number(raw);
    if (opts.min !== undefined && value < opts.min) throw new FieldProblem(`must be >= ${opts.min}`);
    if (opts.max !== undefined && value > opts.max) throw new FieldProblem(`must be <= ${opts.max}`);
    return value;
  });
}

export function port(variable: string, opts: Common<number> = {}): FieldSpec<number> {
  return int(variable, { ...opts, min: 0, max: 65535 });
}

export function bool(variable: string, opts: Common<boolean> = {}): FieldSpec<boolean> {
  return field(variable, opts, (raw) => {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new FieldProblem(`must be true or false, got "${raw}"`);
  });
}

export function oneOf<const T extends string>(variable: string, values: readonly T[], opts: Common<T> = {}): FieldSpec<T> {
  return field(variable, opts, (raw) => {
    if (!(values as readonly string[]).includes(raw)) throw new FieldProblem(`must be one of ${values.join(', ')}, got "${raw}"`);
    return raw as T;
  });
}

export function url(variable: string, opts: Common<string> & { protocols?: string[] } = {}): FieldSpec<string> {
  return field(variable, opts, (raw) => {
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      // The raw value may carry a password: never echo it.
      throw new FieldProblem('must be a URL');
    }
    if (opts.protocols && !opts.protocols.includes(parsed.protocol)) {
      throw new FieldProblem(`must use ${opts.protocols.join(' or ')}, got ${parsed.protocol}`);
    }
    return raw;
  });
}

export function optionalUrl(variable: string, opts: { protocols?: string[]; secret?: boolean } = {}): FieldSpec<string | undefined> {
  const inner = url(variable, opts);
  return { variable, secret: opts.secret, parse: (raw) => (raw === undefined || raw === '' ? undefined : inner.parse(raw)) };
}

/** A host:port address of another service. */
export function address(variable: string, opts: Common<string> = {}): FieldSpec<string> {
  return field(variable, opts, (raw) => {
    if (!/^[A-Za-z0-9.\-_[\]:]+:\d{1,5}$/.test(raw)) throw new FieldProblem(`must be host:port, got "${raw}"`);
    return raw;
  });
}

export function list(variable: string, opts: Common<string[]> = {}): FieldSpec<string[]> {
  return field(variable, opts, (raw) =>
    raw
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  );
}

export type ConfigSchema = Record<string, FieldSpec<unknown>>;
export type ConfigOf<S extends ConfigSchema> = { readonly [K in keyof S]: S[K] extends FieldSpec<infer T> ? T : never };

export function loadConfig<S extends ConfigSchema>(schema: S, env: Env = process.env): ConfigOf<S> {
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema)) {
    try {
      out[key] = spec.parse(env[spec.variable]);
    } catch (err) {
      if (!(err instanceof FieldProblem)) throw err;
      problems.push(`${spec.variable} ${err.message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(out) as ConfigOf<S>;
}

/** A loggable view of a config: secret fields and URL passwords hidden. */
export function describeConfig<S extends ConfigSchema>(schema: S, config: ConfigOf<S>): Record<string, unknown> {
  const view: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema)) {
    const value = (config as Record<string, unknown>)[key];
    if (spec.secret) view[spec.variable] = value === undefined ? undefined : '(set)';
    else if (typeof value === 'string' && /^[a-z]+:\/\//i.test(value)) view[spec.variable] = redactUrl(value);
    else view[spec.variable] = value;
  }
  return view;
}

export function redactUrl(raw: string): string {
  try {
    const parsed = new URL(raw);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable)';
  }
}
