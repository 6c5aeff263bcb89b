import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../errors/errors';
import type { ComponentDefinition, RouteDefinition, ServiceDefinition } from './service-definition';

// What `corral service plan` shows before `corral service deploy`: a pure
// diff of two definitions, per component, with the impact of each change.
// Field names are the TOML file's (snake_case), since that is what the
// operator edits.

/**
 * - `replace`: running instances must be replaced by new ones (image, command,
 *   env, secrets, resources, routes' ports…), rolled out per the update policy.
 * - `reschedule`: placement constraints changed; instances whose host no
 *   longer satisfies them are moved, the others stay.
 * - `in-place`: no instance is replaced (count, restart, health, update
 *   policy, a route's l4/l7 mode, which only the edge router uses).
 */
export type ChangeImpact = 'replace' | 'reschedule' | 'in-place';

export interface FieldChange {
  /** e.g. `image`, `env.LOG_LEVEL`, `resources.memory_mb`, `routes.rest.port`. */
  field: string;
  kind: 'add' | 'remove' | 'change';
  from?: unknown;
  to?: unknown;
  impact: ChangeImpact;
}

export type ComponentAction = 'create' | 'update' | 'scale' | 'remove' | 'unchanged';

export interface ComponentPlan {
  name: string;
  action: ComponentAction;
  countFrom: number;
  countTo: number;
  /** Empty for create/remove/unchanged; for scale, just the count. */
  changes: FieldChange[];
  /** Running instances get replaced (rolling, `update.max_parallel` at a time). */
  replacesInstances: boolean;
  /** Placement changed: instances that no longer fit their host move. */
  reschedules: boolean;
}

export interface ServicePlan {
  service: string;
  action: 'create' | 'update' | 'unchanged';
  fromDigest?: string;
  toDigest: string;
  /** Service-level fields (description, update policy). */
  serviceChanges: FieldChange[];
  /** In the new definition's order, then the removed components. */
  components: ComponentPlan[];
  counts: Record<ComponentAction, number>;
  /** Human-readable, one line each, for `corral service plan`. */
  summary: string[];
}

// ---------------------------------------------------------------------------
// Canonical form and digest

/** JSON with object keys sorted at every level and undefined members dropped. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const member = (value as Record<string, unknown>)[key];
      if (member !== undefined) out[key] = sortKeys(member);
    }
    return out;
  }
  return value;
}

/**
 * `sha256:<hex>` of the canonical JSON of a normalised definition: equal for
 * definitions that mean the same (key order, written-out defaults and legacy
 * `ports` vs equivalent `routes` make no difference).
 */
export function definitionDigest(def: ServiceDefinition): string {
  return `sha256:${createHash('sha256').update(canonicalJson(def)).digest('hex')}`;
}

const shortDigest = (digest: string) => digest.slice(0, 'sha256:'.length + 12);

// ---------------------------------------------------------------------------
// Diff

const show = (value: unknown) => (typeof value === 'string' ? JSON.stringify(value) : canonicalJson(value));

function diffValue(field: string, from: unknown, to: unknown, impact: ChangeImpact, out: FieldChange[]) {
  if (canonicalJson(from) === canonicalJson(to)) return;
  if (from === undefined) out.push({ field, kind: 'add', to, impact });
  else if (to === undefined) out.push({ field, kind: 'remove', from, impact });
  else out.push({ field, kind: 'change', from, to, impact });
}

function diffMap(field: string, from: Record<string, string>, to: Record<string, string>, impact: ChangeImpact, out: FieldChange[]) {
  const keys = [...new Set([...Object.keys(from), ...Object.keys(to)])].sort();
  for (const key of keys) diffValue(`${field}.${key}`, from[key], to[key], impact, out);
}

function diffRoutes(from: RouteDefinition[], to: RouteDefinition[], out: FieldChange[]) {
  const before = new Map(from.map((r) => [r.name, r]));
  const after = new Map(to.map((r) => [r.name, r]));
  for (const r of from) if (!after.has(r.name)) out.push({ field: `routes.${r.name}`, kind: 'remove', from: routeText(r), impact: 'replace' });
  for (const r of to) {
    const old = before.get(r.name);
    if (!old) {
      out.push({ field: `routes.${r.name}`, kind: 'add', to: routeText(r), impact: 'replace' });
      continue;
    }
    // The port and protocol are where the instance listens ($PORT_<NAME>); the mode is the edge's business.
    diffValue(`routes.${r.name}.port`, old.port, r.port, 'replace', out);
    diffValue(`routes.${r.name}.protocol`, old.protocol, r.protocol, 'replace', out);
    diffValue(`routes.${r.name}.mode`, old.mode, r.mode, 'in-place', out);
  }
}

const routeText = (r: RouteDefinition) => `${r.port}/${r.protocol} ${r.mode}`;

/** Every field that differs between two versions of one component (count included). */
export function diffComponent(from: ComponentDefinition, to: ComponentDefinition): FieldChange[] {
  const out: FieldChange[] = [];
  diffValue('runtime', from.runtime, to.runtime, 'replace', out);
  diffValue('image', from.image, to.image, 'replace', out);
  diffValue('kernel', from.kernel, to.kernel, 'replace', out);
  diffValue('initrd', from.initrd, to.initrd, 'replace', out);
  diffValue('command', from.command, to.command, 'replace', out);
  diffMap('env', from.env, to.env, 'replace', out);
  diffValue('secrets', [...from.secrets].sort(), [...to.secrets].sort(), 'replace', out);
  diffValue('resources.vcpus', from.resources.vcpus, to.resources.vcpus, 'replace', out);
  diffValue('resources.memory_mb', from.resources.memoryMb, to.resources.memoryMb, 'replace', out);
  diffRoutes(from.routes, to.routes, out);
  diffMap('placement.labels', from.placement.labels, to.placement.labels, 'reschedule', out);
  diffValue('placement.host', from.placement.host, to.placement.host, 'reschedule', out);
  diffValue('placement.team', from.placement.team, to.placement.team, 'reschedule', out);
  diffValue('placement.spread_by', from.placement.spreadBy, to.placement.spreadBy, 'reschedule', out);
  diffValue('count', from.count, to.count, 'in-place', out);
  diffValue('restart.policy', from.restart.policy, to.restart.policy, 'in-place', out);
  diffValue('restart.max_attempts', from.restart.maxAttempts, to.restart.maxAttempts, 'in-place', out);
  diffValue('restart.delay_seconds', from.restart.delaySeconds, to.restart.delaySeconds, 'in-place', out);
  diffValue('health', healthDoc(from), healthDoc(to), 'in-place', out);
  diffValue('update.max_parallel', from.update.maxParallel, to.update.maxParallel, 'in-place', out);
  diffValue('update.health_deadline_seconds', from.update.healthDeadlineSeconds, to.update.healthDeadlineSeconds, 'in-place', out);
  diffValue('update.auto_revert', from.update.autoRevert, to.update.autoRevert, 'in-place', out);
  return out;
}

function healthDoc(c: ComponentDefinition): unknown {
  if (!c.health) return undefined;
  const h = c.health;
  const target = h.type === 'exec' ? `exec ${h.command.join(' ')}` : h.type === 'http' ? `http ${h.port} ${h.path}` : `tcp ${h.port}`;
  return `${target} every ${h.intervalSeconds}s (timeout ${h.timeoutSeconds}s, healthy after ${h.healthyThreshold}, unhealthy after ${h.unhealthyThreshold})`;
}

/** The pure diff behind `corral service plan`. `current` is the deployed version, if any. */
export function planServiceChange(current: ServiceDefinition | undefined, next: ServiceDefinition): ServicePlan {
  if (current && current.name !== next.name) {
    throw new InvalidArgumentError(`cannot plan service "${next.name}" against the deployed definition of "${current.name}"`, { field: 'name' });
  }
  const toDigest = definitionDigest(next);
  const fromDigest = current ? definitionDigest(current) : undefined;

  const serviceChanges: FieldChange[] = [];
  if (current) {
    diffValue('description', current.description, next.description, 'in-place', serviceChanges);
    diffValue('update.max_parallel', current.update.maxParallel, next.update.maxParallel, 'in-place', serviceChanges);
    diffValue('update.health_deadline_seconds', current.update.healthDeadlineSeconds, next.update.healthDeadlineSeconds, 'in-place', serviceChanges);
    diffValue('update.auto_revert', current.update.autoRevert, next.update.autoRevert, 'in-place', serviceChanges);
  }

  const before = new Map((current?.components ?? []).map((c) => [c.name, c]));
  const afterNames = new Set(next.components.map((c) => c.name));
  const components: ComponentPlan[] = [];
  for (const c of next.components) {
    const old = before.get(c.name);
    if (!old) {
      components.push({ name: c.name, action: 'create', countFrom: 0, countTo: c.count, changes: [], replacesInstances: false, reschedules: false });
      continue;
    }
    const changes = diffComponent(old, c);
    const onlyCount = changes.length === 1 && changes[0].field === 'count';
    const action: ComponentAction = changes.length === 0 ? 'unchanged' : onlyCount ? 'scale' : 'update';
    components.push({
      name: c.name,
      action,
      countFrom: old.count,
      countTo: c.count,
      changes,
      replacesInstances: changes.some((ch) => ch.impact === 'replace'),
      reschedules: changes.some((ch) => ch.impact === 'reschedule'),
    });
  }
  for (const c of current?.components ?? []) {
    if (!afterNames.has(c.name)) components.push({ name: c.name, action: 'remove', countFrom: c.count, countTo: 0, changes: [], replacesInstances: false, reschedules: false });
  }

  const counts: Record<ComponentAction, number> = { create: 0, update: 0, scale: 0, remove: 0, unchanged: 0 };
  for (const c of components) counts[c.action]++;
  const action: ServicePlan['action'] = !current ? 'create' : fromDigest === toDigest ? 'unchanged' : 'update';

  const plan: Omit<ServicePlan, 'summary'> = { service: next.name, action, ...(fromDigest ? { fromDigest } : {}), toDigest, serviceChanges, components, counts };
  return { ...plan, summary: summarise(plan, current, next) };
}

// ---------------------------------------------------------------------------
// Words

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

function changeLine(ch: FieldChange): string {
  const note = ch.impact === 'replace' ? '' : ch.impact === 'reschedule' ? '  (moves instances that no longer fit)' : '';
  if (ch.kind === 'add') return `+ ${ch.field} = ${show(ch.to)}${note}`;
  if (ch.kind === 'remove') return `- ${ch.field} (was ${show(ch.from)})${note}`;
  return `~ ${ch.field}: ${show(ch.from)} → ${show(ch.to)}${note}`;
}

function describeComponent(c: ComponentDefinition): string {
  const what = c.runtime === 'process' ? `process ${(c.command ?? []).join(' ')}` : `${c.runtime} ${c.image ?? c.kernel ?? ''}`;
  return `${what.trim()}, ${plural(c.resources.vcpus, 'vCPU')}, ${c.resources.memoryMb} MB`;
}

function summarise(plan: Omit<ServicePlan, 'summary'>, current: ServiceDefinition | undefined, next: ServiceDefinition): string[] {
  const lines: string[] = [];
  const digests = plan.fromDigest && plan.action === 'update' ? `${shortDigest(plan.fromDigest)} → ${shortDigest(plan.toDigest)}` : shortDigest(plan.toDigest);
  lines.push(`service ${plan.service}: ${plan.action} (${digests})`);
  for (const ch of plan.serviceChanges) lines.push(`  ${changeLine(ch)}`);
  const byName = (defs: ComponentDefinition[] | undefined) => new Map((defs ?? []).map((c) => [c.name, c]));
  const nextByName = byName(next.components);
  const currentByName = byName(current?.components);
  // Every planned component is in one of the two definitions.
  const nextOf = (name: string) => nextByName.get(name) as ComponentDefinition;
  const currentOf = (name: string) => currentByName.get(name) as ComponentDefinition;
  for (const c of plan.components) {
    switch (c.action) {
      case 'create':
        lines.push(`  + ${c.name}: create ${plural(c.countTo, 'instance')} (${describeComponent(nextOf(c.name))})`);
        break;
      case 'remove':
        lines.push(`  - ${c.name}: remove ${plural(c.countFrom, 'instance')} (${describeComponent(currentOf(c.name))})`);
        break;
      case 'scale':
        lines.push(`  ~ ${c.name}: scale ${c.countFrom} → ${plural(c.countTo, 'instance')}`);
        break;
      case 'unchanged':
        lines.push(`    ${c.name}: unchanged (${plural(c.countTo, 'instance')})`);
        break;
      case 'update': {
        const target = nextOf(c.name);
        const how: string[] = [];
        if (c.replacesInstances) {
          const replaced = Math.min(c.countFrom, c.countTo);
          how.push(replaced > 0 ? `replaces ${plural(replaced, 'instance')}, ${target.update.maxParallel} at a time` : 'new instances');
        } else if (c.reschedules) {
          how.push('moves instances whose host no longer fits');
        } else {
          how.push('in place');
        }
        if (c.countFrom !== c.countTo) how.push(`scale ${c.countFrom} → ${c.countTo}`);
        lines.push(`  ~ ${c.name}: update, ${how.join(', ')}`);
        for (const ch of c.changes) lines.push(`      ${changeLine(ch)}`);
        break;
      }
    }
  }
  const { create, update, scale, remove, unchanged } = plan.counts;
  lines.push(`Plan: ${create} to create, ${update} to update, ${scale} to scale, ${remove} to remove, ${unchanged} unchanged.`);
  return lines;
}
