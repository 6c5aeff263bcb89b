import { InvalidArgumentError } from '../errors/errors';
import { parseServiceDefinition } from './service-definition';
import { canonicalJson, definitionDigest, planServiceChange } from './service-plan';

const V1 = `
name = "shop"

[[components]]
name = "api"
runtime = "container"
image = "shop/api:1"
count = 3
env = { LOG_LEVEL = "info", OLD = "x" }
ports = [8443]

[[components]]
name = "cache"
runtime = "container"
image = "redis:7"

[[components]]
name = "db"
runtime = "container"
image = "postgres:16"
resources = { memory_mb = 2048 }

[[components]]
name = "legacy"
runtime = "process"
command = ["/bin/legacy"]
count = 2
`;

const V2 = `
name = "shop"
description = "now with workers"

[[components]]
name = "api"
runtime = "container"
image = "shop/api:2"
count = 4
env = { LOG_LEVEL = "debug", NEW = "y" }
ports = [8443]

[[components]]
name = "cache"
runtime = "container"
image = "redis:7"
count = 3

[[components]]
name = "db"
runtime = "container"
image = "postgres:16"
resources = { memory_mb = 2048 }

[[components]]
name = "worker"
runtime = "microvm"
kernel = "/boot/vmlinuz"
count = 2
`;

describe('planServiceChange', () => {
  const v1 = parseServiceDefinition(V1);
  const v2 = parseServiceDefinition(V2);

  it('plans a new service as all creates', () => {
    const plan = planServiceChange(undefined, v1);
    expect(plan.action).toBe('create');
    expect(plan.fromDigest).toBeUndefined();
    expect(plan.components.map((c) => [c.name, c.action, c.countTo])).toEqual([
      ['api', 'create', 3],
      ['cache', 'create', 1],
      ['db', 'create', 1],
      ['legacy', 'create', 2],
    ]);
    expect(plan.summary.slice(1)).toEqual([
      '  + api: create 3 instances (container shop/api:1, 1 vCPU, 256 MB)',
      '  + cache: create 1 instance (container redis:7, 1 vCPU, 256 MB)',
      '  + db: create 1 instance (container postgres:16, 1 vCPU, 2048 MB)',
      '  + legacy: create 2 instances (process /bin/legacy, 1 vCPU, 256 MB)',
      'Plan: 4 to create, 0 to update, 0 to scale, 0 to remove, 0 unchanged.',
    ]);
  });

  it('tells updates that replace instances from scaling, removal and creation', () => {
    const plan = planServiceChange(v1, v2);
    expect(plan.action).toBe('update');
    expect(plan.counts).toEqual({ create: 1, update: 1, scale: 1, remove: 1, unchanged: 1 });
    const api = plan.components.find((c) => c.name === 'api')!;
    expect(api).toMatchObject({ action: 'update', countFrom: 3, countTo: 4, replacesInstances: true, reschedules: false });
    expect(api.changes).toEqual([
      { field: 'image', kind: 'change', from: 'shop/api:1', to: 'shop/api:2', impact: 'replace' },
      { field: 'env.LOG_LEVEL', kind: 'change', from: 'info', to: 'debug', impact: 'replace' },
      { field: 'env.NEW', kind: 'add', to: 'y', impact: 'replace' },
      { field: 'env.OLD', kind: 'remove', from: 'x', impact: 'replace' },
      { field: 'count', kind: 'change', from: 3, to: 4, impact: 'in-place' },
    ]);
    expect(plan.components.find((c) => c.name === 'cache')).toMatchObject({ action: 'scale', countFrom: 1, countTo: 3 });
    expect(plan.components.map((c) => [c.name, c.action])).toEqual([
      ['api', 'update'],
      ['cache', 'scale'],
      ['db', 'unchanged'],
      ['worker', 'create'],
      ['legacy', 'remove'],
    ]);
    expect(plan.serviceChanges).toEqual([{ field: 'description', kind: 'add', to: 'now with workers', impact: 'in-place' }]);
    expect(plan.summary[0]).toMatch(/^service shop: update \(sha256:[0-9a-f]{12} → sha256:[0-9a-f]{12}\)$/);
    expect(plan.summary.slice(1)).toEqual([
      '  + description = "now with workers"',
      '  ~ api: update, replaces 3 instances, 1 at a time, scale 3 → 4',
      '      ~ image: "shop/api:1" → "shop/api:2"',
      '      ~ env.LOG_LEVEL: "info" → "debug"',
      '      + env.NEW = "y"',
      '      - env.OLD (was "x")',
      '      ~ count: 3 → 4',
      '  ~ cache: scale 1 → 3 instances',
      '    db: unchanged (1 instance)',
      '  + worker: create 2 instances (microvm /boot/vmlinuz, 1 vCPU, 256 MB)',
      '  - legacy: remove 2 instances (process /bin/legacy, 1 vCPU, 256 MB)',
      'Plan: 1 to create, 1 to update, 1 to scale, 1 to remove, 1 unchanged.',
    ]);
  });

  it('classifies in-place, reschedule and replace changes', () => {
    const base = parseServiceDefinition('name = "s"\n[[components]]\nname = "a"\nruntime = "container"\nimage = "i"\nroutes = [{ name = "web", port = 80 }]\n');
    const modeOnly = parseServiceDefinition('name = "s"\n[[components]]\nname = "a"\nruntime = "container"\nimage = "i"\nroutes = [{ name = "web", port = 80, mode = "l7" }]\n');
    const portChange = parseServiceDefinition('name = "s"\n[[components]]\nname = "a"\nruntime = "container"\nimage = "i"\nroutes = [{ name = "web", port = 81 }]\n');
    const placed = parseServiceDefinition('name = "s"\n[[components]]\nname = "a"\nruntime = "container"\nimage = "i"\nroutes = [{ name = "web", port = 80 }]\nplacement = { labels = { zone = "a" } }\n');
    const restart = parseServiceDefinition('name = "s"\n[[components]]\nname = "a"\nruntime = "container"\nimage = "i"\nroutes = [{ name = "web", port = 80 }]\nrestart = { policy = "never" }\n');

    expect(planServiceChange(base, modeOnly).components[0]).toMatchObject({ action: 'update', replacesInstances: false, reschedules: false });
    expect(planServiceChange(base, modeOnly).components[0].changes).toEqual([{ field: 'routes.web.mode', kind: 'change', from: 'l4', to: 'l7', impact: 'in-place' }]);
    expect(planServiceChange(base, portChange).components[0]).toMatchObject({ replacesInstances: true });
    expect(planServiceChange(base, placed).components[0]).toMatchObject({ replacesInstances: false, reschedules: true });
    expect(planServiceChange(base, placed).components[0].changes).toEqual([{ field: 'placement.labels.zone', kind: 'add', to: 'a', impact: 'reschedule' }]);
    expect(planServiceChange(base, restart).summary[1]).toBe('  ~ a: update, in place');
  });

  it('sees no change between equivalent files', () => {
    const a = parseServiceDefinition('name = "s"\n[[components]]\nname = "a"\nruntime = "container"\nimage = "i"\nports = [80]\n');
    const b = parseServiceDefinition(
      'name = "s"\n[[components]]\nimage = "i"\nruntime = "container"\nname = "a"\ncount = 1\nresources = { memory_mb = 256 }\nroutes = [{ name = "port-80", port = 80, mode = "l4" }]\n',
    );
    expect(definitionDigest(a)).toBe(definitionDigest(b));
    const plan = planServiceChange(a, b);
    expect(plan.action).toBe('unchanged');
    expect(plan.summary).toEqual([`service s: unchanged (${definitionDigest(a).slice(0, 19)})`, '    a: unchanged (1 instance)', 'Plan: 0 to create, 0 to update, 0 to scale, 0 to remove, 1 unchanged.']);
  });

  it('refuses to compare two different services', () => {
    const other = { ...parseServiceDefinition(V1), name: 'other' };
    expect(() => planServiceChange(other, parseServiceDefinition(V1))).toThrow(InvalidArgumentError);
  });
});

describe('definitionDigest', () => {
  it('is sha256 of the canonical JSON and ignores key order', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: undefined }], c: null } })).toBe('{"a":{"c":null,"d":[2,{"z":1}]},"b":1}');
    const def = parseServiceDefinition(V1);
    expect(definitionDigest(def)).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(definitionDigest(structuredClone(def))).toBe(definitionDigest(def));
    expect(definitionDigest(parseServiceDefinition(V2))).not.toBe(definitionDigest(def));
  });
});
