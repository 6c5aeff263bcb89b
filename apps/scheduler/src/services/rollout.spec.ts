import { parseServiceDefinition, type ServiceDefinition } from '@corral/domain';
import { decideOnFailure, healthVerdict, planRollout, stepCount, type ServiceInstanceRecord } from './rollout';

const toml = (opts: { image?: string; count?: number; maxParallel?: number; autoRevert?: boolean; workers?: boolean; label?: string } = {}) => `
name = "shop"
[update]
max_parallel = ${opts.maxParallel ?? 1}
auto_revert = ${opts.autoRevert ?? true}

[[components]]
name = "api"
runtime = "container"
image = "${opts.image ?? 'localhost/api:1'}"
count = ${opts.count ?? 3}
${opts.label ? `placement = { labels = { zone = "${opts.label}" } }` : ''}
${
  opts.workers === false
    ? ''
    : `
[[components]]
name = "worker"
runtime = "process"
command = ["/bin/sleep", "1000"]
`
}`;

const v1 = parseServiceDefinition(toml());
let n = 0;
const instance = (component: string, index: number, version: number, extra: Partial<ServiceInstanceRecord> = {}): ServiceInstanceRecord => ({
  workloadId: `w-${component}-${index}-v${version}-${++n}`,
  component,
  index,
  version,
  state: 'running',
  hostId: 'h-1',
  createdAt: new Date(1_000 + n),
  ...extra,
});

const plan = (target: ServiceDefinition, version: number, instances: ServiceInstanceRecord[], defs: Record<number, ServiceDefinition> = { 1: v1 }, hostFits = true) =>
  planRollout({ target, targetVersion: version, instances, definitionOf: (v) => (v === version ? target : defs[v]), hostFits: () => hostFits });

describe('planRollout', () => {
  it('creates every slot of a new service, max_parallel per batch, component by component', () => {
    const p = plan(parseServiceDefinition(toml({ maxParallel: 2 })), 1, []);
    expect(p.batches.map((b) => b.map((s) => `${s.kind} ${s.component}[${s.index}]`))).toEqual([
      ['create api[0]', 'create api[1]'],
      ['create api[2]'],
      ['create worker[0]'],
    ]);
    expect(p.adopt).toEqual([]);
    expect(p.remove).toEqual([]);
    expect(stepCount(p)).toBe(4);
  });

  it('replaces instances whose image changed, one at a time, and adopts the unchanged component', () => {
    const live = [instance('api', 0, 1), instance('api', 1, 1), instance('api', 2, 1), instance('worker', 0, 1)];
    const p = plan(parseServiceDefinition(toml({ image: 'localhost/api:2' })), 2, live);
    expect(p.batches).toHaveLength(3);
    expect(p.batches.flat()).toEqual([0, 1, 2].map((i) => ({ kind: 'replace', component: 'api', index: i, old: live[i].workloadId, why: 'changed: image' })));
    expect(p.adopt).toEqual([{ kind: 'adopt', component: 'worker', index: 0, workloadId: live[3].workloadId }]);
  });

  it('scales in place: new slots are created, surplus slots removed last, nothing replaced', () => {
    const live = [instance('api', 0, 1), instance('api', 1, 1), instance('api', 2, 1), instance('worker', 0, 1)];
    const down = plan(parseServiceDefinition(toml({ count: 1 })), 2, live);
    expect(down.batches).toEqual([]);
    expect(down.remove.map((s) => `${s.component}[${s.index}] ${s.why}`)).toEqual(['api[1] scaled to 1', 'api[2] scaled to 1']);
    const up = plan(parseServiceDefinition(toml({ count: 4 })), 2, live);
    expect(up.batches.flat().map((s) => `${s.kind} ${s.component}[${s.index}]`)).toEqual(['create api[3]']);
    expect(up.adopt).toHaveLength(4);
  });

  it('removes the instances of a component the definition dropped', () => {
    const live = [instance('api', 0, 1), instance('worker', 0, 1)];
    const p = plan(parseServiceDefinition(toml({ count: 1, workers: false })), 2, live);
    expect(p.remove).toEqual([{ kind: 'remove', component: 'worker', index: 0, workloadId: live[1].workloadId, why: 'the component is no longer in the definition' }]);
  });

  it('replaces stopped or failed instances even of the target version, and ignores retired ones', () => {
    const live = [instance('api', 0, 1, { state: 'failed' }), instance('api', 1, 1, { state: 'retired' }), instance('api', 2, 1), instance('worker', 0, 1, { state: 'stopped' })];
    const p = plan(v1, 1, live);
    expect(p.batches.flat().map((s) => `${s.kind} ${s.component}[${s.index}]${s.kind === 'replace' ? ` (${s.why})` : ''}`)).toEqual([
      'replace api[0] (it is failed)',
      'create api[1]',
      'replace worker[0] (it is stopped)',
    ]);
  });

  it('keeps one instance per slot: the newest of the target version; the others go', () => {
    const old = instance('api', 0, 1);
    const current = instance('api', 0, 2);
    const p = plan(parseServiceDefinition(toml({ count: 1, workers: false })), 2, [current, old], { 1: v1 });
    expect(p.batches).toEqual([]);
    expect(p.remove).toEqual([expect.objectContaining({ workloadId: old.workloadId, why: 'another instance holds its slot' })]);
  });

  it('moves instances after a placement change only where their host no longer fits', () => {
    const live = [instance('api', 0, 1), instance('worker', 0, 1)];
    const target = parseServiceDefinition(toml({ count: 1, label: 'b' }));
    expect(plan(target, 2, live, { 1: v1 }, true).batches).toEqual([]);
    expect(plan(target, 2, live, { 1: v1 }, false).batches.flat()).toEqual([expect.objectContaining({ kind: 'replace', component: 'api', why: 'its host no longer fits the placement' })]);
  });
});

describe('decideOnFailure', () => {
  const api = v1.components[0];
  it('reverts to the previous version when auto_revert is on', () => {
    expect(decideOnFailure({ component: api, previousVersion: 3, reverting: false, failure: 'api[0]: not healthy' })).toEqual({
      action: 'revert',
      toVersion: 3,
      reason: 'api[0]: not healthy; reverting to version 3',
    });
  });
  it('halts a first deploy, a component with auto_revert off, and a failed revert', () => {
    expect(decideOnFailure({ component: api, previousVersion: 0, reverting: false, failure: 'x' })).toMatchObject({ action: 'halt', reason: expect.stringContaining('no earlier version') });
    const noRevert = parseServiceDefinition(toml({ autoRevert: false })).components[0];
    expect(decideOnFailure({ component: noRevert, previousVersion: 2, reverting: false, failure: 'x' })).toMatchObject({ action: 'halt', reason: expect.stringContaining('auto_revert is off') });
    expect(decideOnFailure({ component: api, previousVersion: 2, reverting: true, failure: 'x' })).toMatchObject({ action: 'halt', reason: 'the revert failed too: x' });
  });
});

describe('healthVerdict', () => {
  const at = { healthyThreshold: 2, now: 100, deadline: 200 };
  it('is healthy after the threshold of passes in a row while running', () => {
    expect(healthVerdict({ ...at, state: 'running', consecutivePasses: 1 })).toBe('waiting');
    expect(healthVerdict({ ...at, state: 'running', consecutivePasses: 2 })).toBe('healthy');
  });
  it('waits while starting or missing, and is unhealthy past the deadline or once the instance stopped running', () => {
    expect(healthVerdict({ ...at, state: 'provisioning', consecutivePasses: 0 })).toBe('waiting');
    // Its host went silent: that may pass before the deadline.
    expect(healthVerdict({ ...at, state: 'missing', consecutivePasses: 0 })).toBe('waiting');
    expect(healthVerdict({ ...at, state: 'missing', consecutivePasses: 0, now: 200 })).toBe('unhealthy');
    expect(healthVerdict({ ...at, state: 'running', consecutivePasses: 1, now: 200 })).toBe('unhealthy');
    expect(healthVerdict({ ...at, state: 'failed', consecutivePasses: 0 })).toBe('unhealthy');
    expect(healthVerdict({ ...at, state: 'stopped', consecutivePasses: 5 })).toBe('unhealthy');
  });
});
