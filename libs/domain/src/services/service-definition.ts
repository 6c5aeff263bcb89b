import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import { parse as parseToml, stringify as stringifyToml, TomlError } from 'smol-toml';
import { InvalidArgumentError } from '../errors/errors';
import {
  SERVICE_DEFAULTS,
  SERVICE_DEFINITION_SCHEMA,
  SERVICE_LIMITS,
  type COMPONENT_RUNTIMES,
  type HEALTH_CHECK_TYPES,
  type RESTART_POLICIES,
  type SERVICE_ROUTE_MODES,
  type SERVICE_ROUTE_PROTOCOLS,
} from './service-schema';

// A service definition: TOML text → schema (ajv) → the rules a schema cannot
// say → a typed, defaulted, normalised `ServiceDefinition`. Every problem is
// reported as `path: message` with paths like `components[1].routes[0].port`,
// all of them at once; the error's `field` is the first one's path.

export type ComponentRuntime = (typeof COMPONENT_RUNTIMES)[number];
export type ComponentRestartPolicy = (typeof RESTART_POLICIES)[number];
export type HealthCheckType = (typeof HEALTH_CHECK_TYPES)[number];
export type ServiceRouteMode = (typeof SERVICE_ROUTE_MODES)[number];
export type ServiceRouteProtocol = (typeof SERVICE_ROUTE_PROTOCOLS)[number];

export interface ServiceUpdatePolicy {
  maxParallel: number;
  healthDeadlineSeconds: number;
  autoRevert: boolean;
}

export interface RouteDefinition {
  name: string;
  port: number;
  mode: ServiceRouteMode;
  protocol: ServiceRouteProtocol;
}

interface HealthTiming {
  intervalSeconds: number;
  timeoutSeconds: number;
  healthyThreshold: number;
  unhealthyThreshold: number;
}

/** `port` is always the NAME of one of the component's tcp routes. */
export type ComponentHealthCheck = HealthTiming &
  ({ type: 'tcp'; port: string } | { type: 'http'; port: string; path: string } | { type: 'exec'; command: string[] });

export interface ComponentPlacement {
  /** Host labels that must all match exactly. */
  labels: Record<string, string>;
  /** Pin to one host, by id or name. */
  host?: string;
  /** Run only on this team's own (BYOC) hosts. */
  team?: string;
  /** Spread instances across the values of this host label. */
  spreadBy?: string;
}

export interface ComponentDefinition {
  name: string;
  runtime: ComponentRuntime;
  image?: string;
  kernel?: string;
  initrd?: string;
  /** Absent: the image's own command (containers, VMs). Always set for `process`. */
  command?: string[];
  env: Record<string, string>;
  /** Names of tenant secrets, injected at deploy as env vars of the same name. */
  secrets: string[];
  resources: { vcpus: number; memoryMb: number };
  count: number;
  placement: ComponentPlacement;
  restart: { policy: ComponentRestartPolicy; maxAttempts: number; delaySeconds: number };
  health?: ComponentHealthCheck;
  /** Legacy `ports` are normalised into routes named `port-<n>` (`port-<n>-udp` when the number is also used over tcp). */
  routes: RouteDefinition[];
  /** The effective policy: the service's, with this component's overrides. */
  update: ServiceUpdatePolicy;
}

export interface ServiceDefinition {
  name: string;
  description?: string;
  update: ServiceUpdatePolicy;
  components: ComponentDefinition[];
}

export interface DefinitionProblem {
  /** e.g. `components[1].routes[0].port`; `toml` for syntax errors. */
  path: string;
  message: string;
}

// ---------------------------------------------------------------------------
// Entry points

/** Parses a TOML service file. Throws InvalidArgumentError listing every problem. */
export function parseServiceDefinition(tomlText: string): ServiceDefinition {
  if (tomlText.length > SERVICE_LIMITS.fileMaxLength) {
    throw problemsError([{ path: 'toml', message: `the file is longer than ${SERVICE_LIMITS.fileMaxLength} characters` }]);
  }
  let doc: unknown;
  try {
    doc = parseToml(tomlText, { unsafeKeyBehaviour: 'throw' });
  } catch (err) {
    if (err instanceof TomlError) {
      const reason = err.message.split('\n')[0].replace(/^Invalid TOML document:\s*/, '');
      throw problemsError([{ path: 'toml', message: `line ${err.line}, column ${err.column}: ${reason}` }], err);
    }
    throw problemsError([{ path: 'toml', message: err instanceof Error ? err.message : String(err) }], err);
  }
  return validateParsed(doc);
}

/**
 * Validates a definition document that is already parsed (snake_case, as in
 * the TOML file; e.g. a JSON request body). The input is not modified.
 */
export function validateServiceDefinition(document: unknown): ServiceDefinition {
  return validateParsed(structuredClone(document));
}

/** Like `validateServiceDefinition`, but returns the problems instead of throwing. */
export function checkServiceDefinition(document: unknown): { ok: true; definition: ServiceDefinition } | { ok: false; problems: DefinitionProblem[] } {
  const doc = structuredClone(document);
  const problems = schemaProblems(doc);
  if (problems.length > 0) return { ok: false, problems };
  const result = normalise(doc as RawService);
  return result.problems.length > 0 ? { ok: false, problems: result.problems } : { ok: true, definition: result.definition };
}

function validateParsed(doc: unknown): ServiceDefinition {
  const problems = schemaProblems(doc);
  if (problems.length > 0) throw problemsError(problems);
  const result = normalise(doc as RawService);
  if (result.problems.length > 0) throw problemsError(result.problems);
  return result.definition;
}

/**
 * What `parseServiceDefinition` throws: an InvalidArgumentError (code
 * INVALID_ARGUMENT, `field` = the first problem's path) that also carries the
 * problems as data. Across a gRPC hop only the message and field survive; the
 * message lists every problem as `path: message`, separated by "; ".
 */
export class ServiceDefinitionError extends InvalidArgumentError {
  constructor(
    readonly problems: DefinitionProblem[],
    cause?: unknown,
  ) {
    const lines = problems.map((p) => `${p.path}: ${p.message}`);
    super(
      problems.length === 1 ? `invalid service definition: ${lines[0]}` : `invalid service definition (${problems.length} problems): ${lines.join('; ')}`,
      { field: problems[0]?.path, cause },
    );
  }
}

function problemsError(problems: DefinitionProblem[], cause?: unknown): ServiceDefinitionError {
  return new ServiceDefinitionError(problems, cause);
}

// ---------------------------------------------------------------------------
// Schema validation and error paths

let compiled: ValidateFunction | undefined;
function validator(): ValidateFunction {
  if (!compiled) {
    // strictRequired is off because if/then schemas name properties defined
    // next to them, not inside them; union types are deliberate (ports).
    const ajv = new Ajv2020({ allErrors: true, useDefaults: true, verbose: true, strict: true, strictRequired: false, allowUnionTypes: true });
    compiled = ajv.compile(SERVICE_DEFINITION_SCHEMA);
  }
  return compiled;
}

function schemaProblems(doc: unknown): DefinitionProblem[] {
  const validate = validator();
  if (validate(doc)) return [];
  const problems: DefinitionProblem[] = [];
  const seen = new Set<string>();
  for (const error of validate.errors ?? []) {
    const problem = describeError(doc, error);
    if (!problem) continue;
    const key = `${problem.path}\u0000${problem.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    problems.push(problem);
  }
  return problems.length > 0 ? problems : [{ path: '(root)', message: 'does not match the service definition schema' }];
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `/components/1/routes/0/port` → `components[1].routes[0].port`, using the document to tell indexes from keys. */
export function jsonPointerToPath(doc: unknown, pointer: string, extra: (string | number)[] = []): string {
  const segments = pointer === '' ? [] : pointer.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  let node: unknown = doc;
  let out = '';
  const step = (segment: string | number) => {
    if (Array.isArray(node) && /^\d+$/.test(String(segment))) {
      out += `[${segment}]`;
      node = node[Number(segment)];
      return;
    }
    const key = String(segment);
    out += IDENTIFIER.test(key) ? (out === '' ? key : `.${key}`) : `[${JSON.stringify(key)}]`;
    node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[key] : undefined;
  };
  for (const s of segments) step(s);
  for (const s of extra) step(s);
  return out === '' ? '(root)' : out;
}

const TYPE_WORDS: Record<string, string> = {
  string: 'a string',
  integer: 'a whole number',
  number: 'a number',
  boolean: 'true or false',
  object: 'a table',
  array: 'an array',
  null: 'null',
};

function describeError(doc: unknown, error: ErrorObject): DefinitionProblem | undefined {
  const params = error.params as Record<string, unknown>;
  const parent = (error.parentSchema ?? {}) as Record<string, unknown>;
  const description = typeof parent.description === 'string' ? parent.description : undefined;
  const at = (...extra: (string | number)[]) => jsonPointerToPath(doc, error.instancePath, extra);
  const propertyName = (error as ErrorObject & { propertyName?: string }).propertyName;
  // An error about a property NAME (propertyNames) points at that property.
  const here = () => (propertyName === undefined ? at() : at(propertyName));
  switch (error.keyword) {
    case 'if':
    case 'propertyNames':
    case 'allOf':
      // The failing branch reported its own, more precise error.
      return undefined;
    case 'required': {
      // The description of an if/then branch (which declares no type) says why.
      const why = parent.type === undefined ? description : undefined;
      return { path: at(String(params.missingProperty)), message: why ? `is required: ${why}` : 'is required' };
    }
    case 'dependentRequired':
      return { path: at(String(params.missingProperty)), message: `is required when ${String(params.property)} is set` };
    case 'additionalProperties': {
      const extra = String(params.additionalProperty);
      if (error.instancePath === '' && extra === 'version') {
        return { path: 'version', message: 'is assigned by the server when the definition is deployed, so remove it from the file' };
      }
      const known = Object.keys((parent.properties as Record<string, unknown> | undefined) ?? {});
      const guess = closest(extra, known);
      return { path: at(extra), message: `is not a known field${guess ? ` (did you mean "${guess}"?)` : known.length ? ` (known: ${known.join(', ')})` : ''}` };
    }
    case 'not':
      return { path: here(), message: description ?? 'is not allowed here' };
    case 'const':
      return { path: here(), message: description ?? `must be ${JSON.stringify(params.allowedValue)}` };
    case 'enum':
      return { path: here(), message: `must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}` };
    case 'pattern':
      return { path: here(), message: description ?? `must match ${String(params.pattern)}` };
    case 'type': {
      const types = Array.isArray(params.type) ? (params.type as string[]) : String(params.type).split(',');
      return { path: here(), message: `must be ${types.map((t) => TYPE_WORDS[t] ?? t).join(' or ')}` };
    }
    case 'minimum':
      return { path: here(), message: `must be at least ${String(params.limit)}` };
    case 'maximum':
      return { path: here(), message: `must be at most ${String(params.limit)}` };
    case 'minItems':
      return { path: here(), message: Number(params.limit) === 1 ? 'must not be empty' : `must have at least ${String(params.limit)} items` };
    case 'maxItems':
      return { path: here(), message: `must have at most ${String(params.limit)} items` };
    case 'minLength':
      return { path: here(), message: Number(params.limit) === 1 ? 'must not be empty' : `must be at least ${String(params.limit)} characters` };
    case 'maxLength':
      return { path: here(), message: `must be at most ${String(params.limit)} characters` };
    case 'maxProperties':
      return { path: here(), message: `must have at most ${String(params.limit)} entries` };
    case 'uniqueItems':
      return { path: at(Math.max(Number(params.i), Number(params.j))), message: `repeats item ${Math.min(Number(params.i), Number(params.j))}` };
    default:
      return { path: here(), message: error.message ?? 'is invalid' };
  }
}

/** The known name nearest to a misspelt one (edit distance ≤ 2, or a prefix), if any. */
function closest(word: string, candidates: string[]): string | undefined {
  let best: { name: string; distance: number } | undefined;
  for (const name of candidates) {
    const distance = name.startsWith(word) || word.startsWith(name) ? 1 : editDistance(word.toLowerCase(), name.toLowerCase());
    if (distance <= 2 && (!best || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length];
}

// ---------------------------------------------------------------------------
// The rules after the schema, and snake_case → camelCase

// Shapes as the schema guarantees them (defaults applied).
interface RawUpdate {
  max_parallel?: number;
  health_deadline_seconds?: number;
  auto_revert?: boolean;
}
interface RawRoute {
  name: string;
  port: number;
  mode: ServiceRouteMode;
  protocol: ServiceRouteProtocol;
}
interface RawHealth {
  type: HealthCheckType;
  port?: number | string;
  path?: string;
  command?: string[];
  interval_seconds: number;
  timeout_seconds: number;
  healthy_threshold: number;
  unhealthy_threshold: number;
}
interface RawComponent {
  name: string;
  runtime: ComponentRuntime;
  image?: string;
  kernel?: string;
  initrd?: string;
  command?: string[];
  env: Record<string, string>;
  secrets: string[];
  resources: { vcpus: number; memory_mb: number };
  count: number;
  placement?: { labels?: Record<string, string>; host?: string; team?: string; spread_by?: string };
  restart: { policy: ComponentRestartPolicy; max_attempts: number; delay_seconds: number };
  health?: RawHealth;
  routes?: RawRoute[];
  ports?: (number | string)[];
  update?: RawUpdate;
}
interface RawService {
  name: string;
  description?: string;
  update: Required<RawUpdate>;
  components: RawComponent[];
}

const PORT_VARIABLE = (routeName: string) => `PORT_${routeName.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
const endpoint = (port: number, protocol: ServiceRouteProtocol) => `${port}/${protocol}`;

function normalise(raw: RawService): { definition: ServiceDefinition; problems: DefinitionProblem[] } {
  const problems: DefinitionProblem[] = [];
  const problem = (path: string, message: string) => problems.push({ path, message });

  const firstByName = new Map<string, number>();
  raw.components.forEach((c, i) => {
    const first = firstByName.get(c.name);
    if (first === undefined) firstByName.set(c.name, i);
    else problem(`components[${i}].name`, `"${c.name}" is already the name of components[${first}]`);
  });

  const serviceUpdate: ServiceUpdatePolicy = {
    maxParallel: raw.update.max_parallel,
    healthDeadlineSeconds: raw.update.health_deadline_seconds,
    autoRevert: raw.update.auto_revert,
  };

  const components = raw.components.map((c, i) => normaliseComponent(c, `components[${i}]`, serviceUpdate, problem));
  const definition: ServiceDefinition = { name: raw.name, ...(raw.description !== undefined ? { description: raw.description } : {}), update: serviceUpdate, components };
  return { definition, problems };
}

function normaliseComponent(
  c: RawComponent,
  at: string,
  serviceUpdate: ServiceUpdatePolicy,
  problem: (path: string, message: string) => void,
): ComponentDefinition {
  const routes = normaliseRoutes(c, at, problem);

  // Variables Corral sets itself must not be set by hand.
  if (routes.length > 0) {
    const reserved = new Map<string, string>([['PORT', "the first route's port"]]);
    for (const r of routes) reserved.set(PORT_VARIABLE(r.name), `route "${r.name}"'s port`);
    for (const key of Object.keys(c.env)) {
      const what = reserved.get(key);
      if (what) problem(`${at}.env.${key}`, `is set by Corral to ${what}, so remove it`);
    }
  }
  c.secrets.forEach((secret, j) => {
    if (Object.prototype.hasOwnProperty.call(c.env, secret)) {
      problem(`${at}.secrets[${j}]`, `"${secret}" is also set in env, but a secret is injected as the environment variable of the same name`);
    }
  });

  const health = c.health ? normaliseHealth(c.health, routes, `${at}.health`, problem) : undefined;

  const placement: ComponentPlacement = { labels: { ...(c.placement?.labels ?? {}) } };
  if (c.placement?.host !== undefined) placement.host = c.placement.host;
  if (c.placement?.team !== undefined) placement.team = c.placement.team;
  if (c.placement?.spread_by !== undefined) placement.spreadBy = c.placement.spread_by;

  const component: ComponentDefinition = {
    name: c.name,
    runtime: c.runtime,
    ...(c.image !== undefined ? { image: c.image } : {}),
    ...(c.kernel !== undefined ? { kernel: c.kernel } : {}),
    ...(c.initrd !== undefined ? { initrd: c.initrd } : {}),
    ...(c.command !== undefined ? { command: [...c.command] } : {}),
    env: { ...c.env },
    secrets: [...c.secrets],
    resources: { vcpus: c.resources.vcpus, memoryMb: c.resources.memory_mb },
    count: c.count,
    placement,
    restart: { policy: c.restart.policy, maxAttempts: c.restart.max_attempts, delaySeconds: c.restart.delay_seconds },
    ...(health ? { health } : {}),
    routes,
    update: {
      maxParallel: c.update?.max_parallel ?? serviceUpdate.maxParallel,
      healthDeadlineSeconds: c.update?.health_deadline_seconds ?? serviceUpdate.healthDeadlineSeconds,
      autoRevert: c.update?.auto_revert ?? serviceUpdate.autoRevert,
    },
  };
  return component;
}

function normaliseRoutes(c: RawComponent, at: string, problem: (path: string, message: string) => void): RouteDefinition[] {
  const routes: RouteDefinition[] = (c.routes ?? []).map((r) => ({ name: r.name, port: r.port, mode: r.mode, protocol: r.protocol }));
  const byName = new Map<string, number>();
  const byEndpoint = new Map<string, number>();
  routes.forEach((r, j) => {
    const sameName = byName.get(r.name);
    if (sameName !== undefined) problem(`${at}.routes[${j}].name`, `"${r.name}" is already the name of routes[${sameName}]`);
    else byName.set(r.name, j);
    const key = endpoint(r.port, r.protocol);
    const samePort = byEndpoint.get(key);
    if (samePort !== undefined) problem(`${at}.routes[${j}].port`, `${key} is already used by route "${routes[samePort].name}"`);
    else byEndpoint.set(key, j);
  });

  if (c.ports === undefined) return routes;

  // Legacy `ports = [8080, "53/udp"]`.
  const legacy: { port: number; protocol: ServiceRouteProtocol; index: number }[] = [];
  const seen = new Map<string, number>();
  c.ports.forEach((entry, j) => {
    const [number, protocol = 'tcp'] = String(entry).split('/') as [string, ServiceRouteProtocol?];
    const port = Number(number);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      problem(`${at}.ports[${j}]`, 'must be a port number from 1 to 65535');
      return;
    }
    const key = endpoint(port, protocol);
    const first = seen.get(key);
    if (first !== undefined) {
      problem(`${at}.ports[${j}]`, `${key} is already listed as ports[${first}]`);
      return;
    }
    seen.set(key, j);
    legacy.push({ port, protocol, index: j });
  });

  if (c.routes !== undefined) {
    // Both forms: fine only if they describe the same ports; routes win (they carry names and modes).
    const onlyInPorts = legacy.filter((p) => !byEndpoint.has(endpoint(p.port, p.protocol))).map((p) => endpoint(p.port, p.protocol));
    const onlyInRoutes = routes.filter((r) => !seen.has(endpoint(r.port, r.protocol))).map((r) => `${endpoint(r.port, r.protocol)} (route "${r.name}")`);
    if (onlyInPorts.length > 0 || onlyInRoutes.length > 0) {
      const parts: string[] = [];
      if (onlyInPorts.length > 0) parts.push(`${onlyInPorts.join(', ')} only in ports`);
      if (onlyInRoutes.length > 0) parts.push(`${onlyInRoutes.join(', ')} only in routes`);
      problem(`${at}.ports`, `disagrees with routes (${parts.join(', and ')}): keep routes and remove the legacy ports`);
    }
    return routes;
  }

  const tcpPorts = new Set(legacy.filter((p) => p.protocol === 'tcp').map((p) => p.port));
  return legacy.map((p) => ({
    name: p.protocol === 'udp' && tcpPorts.has(p.port) ? `port-${p.port}-udp` : `port-${p.port}`,
    port: p.port,
    mode: 'l4',
    protocol: p.protocol,
  }));
}

function normaliseHealth(h: RawHealth, routes: RouteDefinition[], at: string, problem: (path: string, message: string) => void): ComponentHealthCheck | undefined {
  const timing: HealthTiming = {
    intervalSeconds: h.interval_seconds,
    timeoutSeconds: h.timeout_seconds,
    healthyThreshold: h.healthy_threshold,
    unhealthyThreshold: h.unhealthy_threshold,
  };
  if (timing.timeoutSeconds > timing.intervalSeconds) problem(`${at}.timeout_seconds`, `must not exceed interval_seconds (${timing.intervalSeconds})`);
  if (h.type === 'exec') return { type: 'exec', command: [...(h.command ?? [])], ...timing };

  const tcpRoutes = routes.filter((r) => r.protocol === 'tcp');
  const names = (rs: RouteDefinition[]) => rs.map((r) => `${r.name} (${r.port})`).join(', ');
  let port: string | undefined;
  if (h.port === undefined) {
    if (tcpRoutes.length === 1) port = tcpRoutes[0].name;
    else if (tcpRoutes.length === 0) problem(`${at}.port`, `a ${h.type} check needs a tcp route, and this component has none`);
    else problem(`${at}.port`, `is required when the component has several tcp routes: ${names(tcpRoutes)}`);
  } else {
    const target = typeof h.port === 'number' ? routes.find((r) => r.port === h.port && r.protocol === 'tcp') : routes.find((r) => r.name === h.port);
    if (!target) {
      const what = typeof h.port === 'number' ? `port ${h.port}` : `"${h.port}"`;
      problem(`${at}.port`, `${what} is not a tcp route of this component${tcpRoutes.length ? ` (routes: ${names(tcpRoutes)})` : ' (it has no tcp routes)'}`);
    } else if (target.protocol !== 'tcp') {
      problem(`${at}.port`, `route "${target.name}" is udp, but ${h.type} checks need a tcp route`);
    } else {
      port = target.name;
    }
  }
  if (port === undefined) return undefined;
  return h.type === 'http' ? { type: 'http', port, path: h.path ?? SERVICE_DEFAULTS.healthHttpPath, ...timing } : { type: 'tcp', port, ...timing };
}

// ---------------------------------------------------------------------------
// Back to the file's shape

/**
 * The snake_case document of a definition (what the TOML file says, with
 * defaults written out and legacy ports as routes). Validating it gives the
 * same definition back.
 */
export function serviceDefinitionToDocument(def: ServiceDefinition): Record<string, unknown> {
  const update = (u: ServiceUpdatePolicy) => ({ max_parallel: u.maxParallel, health_deadline_seconds: u.healthDeadlineSeconds, auto_revert: u.autoRevert });
  const serviceUpdate = update(def.update);
  return {
    name: def.name,
    ...(def.description !== undefined ? { description: def.description } : {}),
    update: serviceUpdate,
    components: def.components.map((c) => {
      const own = update(c.update);
      const overrides = Object.fromEntries(Object.entries(own).filter(([k, v]) => serviceUpdate[k as keyof typeof serviceUpdate] !== v));
      const placement: Record<string, unknown> = {};
      if (Object.keys(c.placement.labels).length > 0) placement.labels = { ...c.placement.labels };
      if (c.placement.host !== undefined) placement.host = c.placement.host;
      if (c.placement.team !== undefined) placement.team = c.placement.team;
      if (c.placement.spreadBy !== undefined) placement.spread_by = c.placement.spreadBy;
      let health: Record<string, unknown> | undefined;
      if (c.health) {
        const h = c.health;
        health = { type: h.type };
        if (h.type === 'exec') health.command = [...h.command];
        else health.port = h.port;
        if (h.type === 'http') health.path = h.path;
        Object.assign(health, {
          interval_seconds: h.intervalSeconds,
          timeout_seconds: h.timeoutSeconds,
          healthy_threshold: h.healthyThreshold,
          unhealthy_threshold: h.unhealthyThreshold,
        });
      }
      return {
        name: c.name,
        runtime: c.runtime,
        ...(c.image !== undefined ? { image: c.image } : {}),
        ...(c.kernel !== undefined ? { kernel: c.kernel } : {}),
        ...(c.initrd !== undefined ? { initrd: c.initrd } : {}),
        ...(c.command !== undefined ? { command: [...c.command] } : {}),
        count: c.count,
        env: { ...c.env },
        secrets: [...c.secrets],
        resources: { vcpus: c.resources.vcpus, memory_mb: c.resources.memoryMb },
        ...(Object.keys(placement).length > 0 ? { placement } : {}),
        restart: { policy: c.restart.policy, max_attempts: c.restart.maxAttempts, delay_seconds: c.restart.delaySeconds },
        ...(health ? { health } : {}),
        ...(c.routes.length > 0 ? { routes: c.routes.map((r) => ({ name: r.name, port: r.port, mode: r.mode, protocol: r.protocol })) } : {}),
        ...(Object.keys(overrides).length > 0 ? { update: overrides } : {}),
      };
    }),
  };
}

/** The definition as a TOML file (e.g. for `corral service show`); parsing it gives the same definition. */
export function serviceDefinitionToToml(def: ServiceDefinition): string {
  return stringifyToml(serviceDefinitionToDocument(def));
}
