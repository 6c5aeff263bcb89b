import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { InvalidArgumentError } from '../errors/errors';
import {
  ServiceDefinitionError,
  checkServiceDefinition,
  parseServiceDefinition,
  serviceDefinitionToDocument,
  serviceDefinitionToToml,
  validateServiceDefinition,
  type ServiceDefinition,
} from './service-definition';
import { SERVICE_DEFINITION_SCHEMA } from './service-schema';

const FULL = `
name = "shop"
description = "the web shop"

[update]
max_parallel = 2

[[components]]
name = "api"
runtime = "container"
image = "registry.local/shop/api:1.4"
command = ["/app/api", "--verbose"]
secrets = ["DB_PASSWORD"]
count = 3
env = { LOG_LEVEL = "info" }

[components.resources]
vcpus = 2
memory_mb = 1024

[components.placement]
labels = { zone = "eu-1" }
team = "team-a"
spread_by = "rack"

[components.restart]
policy = "always"

[components.health]
type = "http"
port = "rest"
path = "/healthz"

[[components.routes]]
name = "rest"
port = 8443
mode = "l7"

[[components.routes]]
name = "metrics"
port = 9090

[components.update]
auto_revert = false

[[components]]
name = "dns"
runtime = "process"
command = ["/usr/sbin/dnsd"]
ports = [53, "53/udp", "8053/tcp"]

[components.health]
type = "tcp"
port = 8053
timeout_seconds = 3
`;

function problemsOf(toml: string) {
  try {
    parseServiceDefinition(toml);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err).toBeInstanceOf(ServiceDefinitionError);
    const e = err as ServiceDefinitionError;
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.field).toBe(e.problems[0].path);
    for (const p of e.problems) expect(e.message).toContain(`${p.path}: ${p.message}`);
    return e.problems;
  }
  throw new Error('expected the definition to be rejected');
}

const paths = (toml: string) => problemsOf(toml).map((p) => p.path);

const component = (body: string, name = 'web') => `name = "svc"\n[[components]]\nname = "${name}"\n${body}\n`;

describe('parseServiceDefinition', () => {
  it('parses a full definition into camelCase with defaults applied', () => {
    const def = parseServiceDefinition(FULL);
    expect(def).toEqual<ServiceDefinition>({
      name: 'shop',
      description: 'the web shop',
      update: { maxParallel: 2, healthDeadlineSeconds: 300, autoRevert: true },
      components: [
        {
          name: 'api',
          runtime: 'container',
          image: 'registry.local/shop/api:1.4',
          command: ['/app/api', '--verbose'],
          env: { LOG_LEVEL: 'info' },
          secrets: ['DB_PASSWORD'],
          resources: { vcpus: 2, memoryMb: 1024 },
          count: 3,
          placement: { labels: { zone: 'eu-1' }, team: 'team-a', spreadBy: 'rack' },
          restart: { policy: 'always', maxAttempts: 3, delaySeconds: 5 },
          health: { type: 'http', port: 'rest', path: '/healthz', intervalSeconds: 10, timeoutSeconds: 2, healthyThreshold: 1, unhealthyThreshold: 3 },
          routes: [
            { name: 'rest', port: 8443, mode: 'l7', protocol: 'tcp' },
            { name: 'metrics', port: 9090, mode: 'l4', protocol: 'tcp' },
          ],
          update: { maxParallel: 2, healthDeadlineSeconds: 300, autoRevert: false },
        },
        {
          name: 'dns',
          runtime: 'process',
          command: ['/usr/sbin/dnsd'],
          env: {},
          secrets: [],
          resources: { vcpus: 1, memoryMb: 256 },
          count: 1,
          placement: { labels: {} },
          restart: { policy: 'on-failure', maxAttempts: 3, delaySeconds: 5 },
          // A port number is resolved to the route's name.
          health: { type: 'tcp', port: 'port-8053', intervalSeconds: 10, timeoutSeconds: 3, healthyThreshold: 1, unhealthyThreshold: 3 },
          routes: [
            { name: 'port-53', port: 53, mode: 'l4', protocol: 'tcp' },
            { name: 'port-53-udp', port: 53, mode: 'l4', protocol: 'udp' },
            { name: 'port-8053', port: 8053, mode: 'l4', protocol: 'tcp' },
          ],
          update: { maxParallel: 2, healthDeadlineSeconds: 300, autoRevert: true },
        },
      ],
    });
  });

  it('accepts every runtime with what it needs', () => {
    expect(parseServiceDefinition(component('runtime = "microvm"\nkernel = "/boot/vmlinuz"\ninitrd = "/boot/initrd"')).components[0]).toMatchObject({
      runtime: 'microvm',
      kernel: '/boot/vmlinuz',
      initrd: '/boot/initrd',
    });
    expect(parseServiceDefinition(component('runtime = "microvm"\nimage = "/images/debian.qcow2"')).components[0].image).toBe('/images/debian.qcow2');
    expect(parseServiceDefinition(component('runtime = "unikernel"\nimage = "/images/hello.img"')).components[0].runtime).toBe('unikernel');
    expect(parseServiceDefinition(component('runtime = "process"\ncommand = ["sleep", "1"]')).components[0].command).toEqual(['sleep', '1']);
  });

  it('defaults a health check to the only tcp route', () => {
    const def = parseServiceDefinition(component('runtime = "container"\nimage = "x"\nports = [8080]\n[components.health]\ntype = "http"'));
    expect(def.components[0].health).toMatchObject({ type: 'http', port: 'port-8080', path: '/' });
  });

  it('accepts legacy ports next to routes when they agree, and keeps the routes', () => {
    const def = parseServiceDefinition(
      component('runtime = "container"\nimage = "x"\nports = [8443, "53/udp"]\n[[components.routes]]\nname = "rest"\nport = 8443\n[[components.routes]]\nname = "dns"\nport = 53\nprotocol = "udp"'),
    );
    expect(def.components[0].routes.map((r) => r.name)).toEqual(['rest', 'dns']);
  });

  it('names the path of every problem, the first as the field', () => {
    const problems = problemsOf(`
name = "Shop"
[[components]]
name = "api"
runtime = "container"
image = "x"
[[components]]
name = "db"
runtime = "container"
image = "y"
[[components.routes]]
name = "rest"
port = 70000
`);
    expect(problems).toEqual([
      { path: 'name', message: 'must be a DNS label: 1-63 lowercase letters, digits or dashes, starting with a letter and not ending with a dash' },
      { path: 'components[1].routes[0].port', message: 'must be at most 65535' },
    ]);
  });

  it('reports missing fields, unknown fields (with a guess) and bad values where they are', () => {
    const problems = problemsOf(`
name = "svc"
version = 3
[[components]]
name = "api"
runtime = "container"
env = { "BAD-NAME" = "x" }
[components.resources]
memory = 512
[[components.routes]]
name = "rest"
port = 8443
mode = "l5"
[[components]]
runtime = "vm"
`);
    expect(problems).toEqual(
      expect.arrayContaining([
        { path: 'version', message: 'is assigned by the server when the definition is deployed, so remove it from the file' },
        { path: 'components[0].image', message: 'is required: a container runs an image' },
        { path: 'components[0].env["BAD-NAME"]', message: 'must be an environment variable name: letters, digits and "_", not starting with a digit' },
        { path: 'components[0].resources.memory', message: 'is not a known field (did you mean "memory_mb"?)' },
        { path: 'components[0].routes[0].mode', message: 'must be one of "l4", "l7"' },
        { path: 'components[1].name', message: 'is required' },
        { path: 'components[1].runtime', message: 'must be one of "container", "microvm", "unikernel", "process"' },
      ]),
    );
    expect(problems).toHaveLength(7);
  });

  it.each([
    ['a container without an image', 'runtime = "container"', 'components[0].image'],
    ['a unikernel without an image', 'runtime = "unikernel"', 'components[0].image'],
    ['a microvm with neither image nor kernel', 'runtime = "microvm"', 'components[0].image'],
    ['an initrd without a kernel', 'runtime = "microvm"\nimage = "x"\ninitrd = "y"', 'components[0].kernel'],
    ['a kernel outside a microvm', 'runtime = "container"\nimage = "x"\nkernel = "k"', 'components[0].kernel'],
    ['a process with an image', 'runtime = "process"\ncommand = ["x"]\nimage = "x"', 'components[0].image'],
    ['a process without a command', 'runtime = "process"', 'components[0].command'],
    ['an empty command', 'runtime = "container"\nimage = "x"\ncommand = []', 'components[0].command'],
    ['too many vcpus', 'runtime = "container"\nimage = "x"\nresources = { vcpus = 65 }', 'components[0].resources.vcpus'],
    ['too little memory', 'runtime = "container"\nimage = "x"\nresources = { memory_mb = 8 }', 'components[0].resources.memory_mb'],
    ['a negative count', 'runtime = "container"\nimage = "x"\ncount = -1', 'components[0].count'],
    ['a fractional count', 'runtime = "container"\nimage = "x"\ncount = 1.5', 'components[0].count'],
    ['an unknown restart policy', 'runtime = "container"\nimage = "x"\nrestart = { policy = "sometimes" }', 'components[0].restart.policy'],
    ['a repeated secret', 'runtime = "container"\nimage = "x"\nsecrets = ["A", "A"]', 'components[0].secrets[1]'],
    ['a bad label name', 'runtime = "container"\nimage = "x"\nplacement = { labels = { "-x" = "y" } }', 'components[0].placement.labels["-x"]'],
    ['a bad route name', 'runtime = "container"\nimage = "x"\nroutes = [{ name = "Rest", port = 1 }]', 'components[0].routes[0].name'],
    ['an l7 udp route', 'runtime = "container"\nimage = "x"\nroutes = [{ name = "r", port = 1, mode = "l7", protocol = "udp" }]', 'components[0].routes[0].protocol'],
    ['a bad legacy port', 'runtime = "container"\nimage = "x"\nports = ["80/sctp"]', 'components[0].ports[0]'],
    ['a legacy port out of range', 'runtime = "container"\nimage = "x"\nports = ["99999/tcp"]', 'components[0].ports[0]'],
    ['a legacy port listed twice', 'runtime = "container"\nimage = "x"\nports = [80, "80/tcp"]', 'components[0].ports[1]'],
    ['an http check with a command', 'runtime = "container"\nimage = "x"\nports = [80]\nhealth = { type = "http", command = ["x"] }', 'components[0].health.command'],
    ['a tcp check with a path', 'runtime = "container"\nimage = "x"\nports = [80]\nhealth = { type = "tcp", path = "/" }', 'components[0].health.path'],
    ['an exec check without a command', 'runtime = "container"\nimage = "x"\nhealth = { type = "exec" }', 'components[0].health.command'],
    ['a check on no route', 'runtime = "container"\nimage = "x"\nhealth = { type = "tcp" }', 'components[0].health.port'],
    ['a check on an unknown route', 'runtime = "container"\nimage = "x"\nports = [80]\nhealth = { type = "tcp", port = "web" }', 'components[0].health.port'],
    ['a check on an unrouted port', 'runtime = "container"\nimage = "x"\nports = [80]\nhealth = { type = "tcp", port = 81 }', 'components[0].health.port'],
    ['a check on a udp route', 'runtime = "container"\nimage = "x"\nports = ["53/udp"]\nhealth = { type = "tcp", port = "port-53" }', 'components[0].health.port'],
    ['an ambiguous check', 'runtime = "container"\nimage = "x"\nports = [80, 81]\nhealth = { type = "tcp" }', 'components[0].health.port'],
    ['a timeout above the interval', 'runtime = "container"\nimage = "x"\nports = [80]\nhealth = { type = "tcp", interval_seconds = 5, timeout_seconds = 6 }', 'components[0].health.timeout_seconds'],
    ['a secret also set in env', 'runtime = "container"\nimage = "x"\nsecrets = ["TOKEN"]\nenv = { TOKEN = "x" }', 'components[0].secrets[0]'],
    ['a hand-set $PORT', 'runtime = "container"\nimage = "x"\nports = [80]\nenv = { PORT = "81" }', 'components[0].env.PORT'],
    ['a hand-set $PORT_<NAME>', 'runtime = "container"\nimage = "x"\nroutes = [{ name = "web-ui", port = 80 }]\nenv = { PORT_WEB_UI = "81" }', 'components[0].env.PORT_WEB_UI'],
    ['a repeated route name', 'runtime = "container"\nimage = "x"\nroutes = [{ name = "r", port = 1 }, { name = "r", port = 2 }]', 'components[0].routes[1].name'],
    ['a repeated route port', 'runtime = "container"\nimage = "x"\nroutes = [{ name = "a", port = 1 }, { name = "b", port = 1 }]', 'components[0].routes[1].port'],
    ['an unknown component field', 'runtime = "container"\nimage = "x"\nimmage = "y"', 'components[0].immage'],
  ])('rejects %s', (_what, body, path) => {
    expect(paths(component(body))[0]).toBe(path);
  });

  it('rejects components with the same name at the later one', () => {
    const problems = problemsOf('name = "svc"\n[[components]]\nname = "a"\nruntime = "process"\ncommand = ["x"]\n[[components]]\nname = "a"\nruntime = "process"\ncommand = ["y"]\n');
    expect(problems).toEqual([{ path: 'components[1].name', message: '"a" is already the name of components[0]' }]);
  });

  it('says which ports and routes disagree', () => {
    const problems = problemsOf(component('runtime = "container"\nimage = "x"\nports = [8080, 9090]\n[[components.routes]]\nname = "rest"\nport = 8443\n[[components.routes]]\nname = "metrics"\nport = 9090'));
    expect(problems).toEqual([
      {
        path: 'components[0].ports',
        message: 'disagrees with routes (8080/tcp only in ports, and 8443/tcp (route "rest") only in routes): keep routes and remove the legacy ports',
      },
    ]);
  });

  it('reports TOML syntax errors with line and column', () => {
    const problems = problemsOf('name = "svc"\n[[components]\nname = "a"\n');
    expect(problems).toHaveLength(1);
    expect(problems[0].path).toBe('toml');
    expect(problems[0].message).toMatch(/^line 2, column \d+: /);
    expect(paths('name = "svc"\nname = "again"\n')).toEqual(['toml']);
    expect(paths(`# ${'x'.repeat(1024 * 1024)}\nname = "svc"\n`)).toEqual(['toml']);
  });

  it('requires at least one and at most 50 components', () => {
    expect(paths('name = "svc"\ncomponents = []\n')).toEqual(['components']);
    expect(paths('name = "svc"\n')).toEqual(['components']);
    const many = Array.from({ length: 51 }, (_, i) => `[[components]]\nname = "c${i}"\nruntime = "process"\ncommand = ["x"]\n`).join('');
    expect(paths(`name = "svc"\n${many}`)).toEqual(['components']);
  });

  it('lists every problem in the message, separated by "; "', () => {
    try {
      parseServiceDefinition('name = "Bad"\n[[components]]\nname = "Bad"\nruntime = "container"\nimage = "x"\n');
      throw new Error('not rejected');
    } catch (err) {
      expect((err as Error).message).toBe(
        'invalid service definition (2 problems): name: must be a DNS label: 1-63 lowercase letters, digits or dashes, starting with a letter and not ending with a dash; components[0].name: must be a DNS label: 1-63 lowercase letters, digits or dashes, starting with a letter and not ending with a dash',
      );
    }
  });
});

describe('validateServiceDefinition', () => {
  it('validates an already-parsed document without changing it', () => {
    const doc = { name: 'svc', components: [{ name: 'a', runtime: 'process', command: ['x'] }] };
    const copy = structuredClone(doc);
    expect(validateServiceDefinition(doc).components[0].resources).toEqual({ vcpus: 1, memoryMb: 256 });
    expect(doc).toEqual(copy);
    expect(checkServiceDefinition({ name: 'svc', components: [{ name: 'a' }] })).toEqual({ ok: false, problems: [{ path: 'components[0].runtime', message: 'is required' }] });
    expect(() => validateServiceDefinition('nope')).toThrow(InvalidArgumentError);
  });
});

describe('the published schema', () => {
  it('is schemas/service-definition.schema.json, unchanged', () => {
    // Regenerate after changing service-schema.ts:
    //   npx tsx -e "import { SERVICE_DEFINITION_SCHEMA as s } from './libs/domain/src/services/service-schema'; require('fs').writeFileSync('schemas/service-definition.schema.json', JSON.stringify(s, null, 2) + '\n')"
    const file = join(__dirname, '../../../../schemas/service-definition.schema.json');
    const published = JSON.parse(readFileSync(file, 'utf8'));
    expect(published).toEqual(JSON.parse(JSON.stringify(SERVICE_DEFINITION_SCHEMA)));
  });

  it('is draft 2020-12', () => {
    expect(SERVICE_DEFINITION_SCHEMA.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
  });
});

// Valid definitions, built as documents.
const dnsLabel = fc.stringMatching(/^[a-z]([a-z0-9-]{0,10}[a-z0-9])?$/);
const envName = fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,8}$/);
const text = fc.string({ maxLength: 12 }).filter((s) => !s.includes('\0'));
const routeDoc = fc.record({
  name: fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/),
  port: fc.integer({ min: 1, max: 65535 }),
  mode: fc.constantFrom('l4', 'l7'),
});
const componentDoc = fc
  .record(
    {
      name: dnsLabel,
      runtime: fc.constantFrom('container', 'microvm', 'unikernel', 'process'),
      image: fc.stringMatching(/^[a-z][a-z0-9./:-]{0,20}$/),
      command: fc.array(text, { minLength: 1, maxLength: 3 }),
      env: fc.dictionary(envName.filter((k) => !k.startsWith('PORT')), text, { maxKeys: 3 }),
      secrets: fc.uniqueArray(fc.stringMatching(/^S_[A-Z0-9]{1,6}$/), { maxLength: 2 }),
      resources: fc.record({ vcpus: fc.integer({ min: 1, max: 64 }), memory_mb: fc.integer({ min: 16, max: 262144 }) }, { requiredKeys: [] }),
      count: fc.integer({ min: 0, max: 1000 }),
      placement: fc.record(
        { labels: fc.dictionary(fc.constantFrom('zone', 'rack', 'gpu'), text, { maxKeys: 2 }), host: dnsLabel, team: dnsLabel, spread_by: fc.constantFrom('zone', 'rack') },
        { requiredKeys: [] },
      ),
      restart: fc.record({ policy: fc.constantFrom('always', 'on-failure', 'never'), max_attempts: fc.integer({ min: 1, max: 1000 }) }, { requiredKeys: [] }),
      routes: fc.uniqueArray(routeDoc, { selector: (r) => r.name, maxLength: 3 }).map((rs) => rs.filter((r, i) => rs.findIndex((o) => o.port === r.port) === i)),
      update: fc.record({ max_parallel: fc.integer({ min: 1, max: 100 }), auto_revert: fc.boolean() }, { requiredKeys: [] }),
      withHealth: fc.boolean(),
    },
    { requiredKeys: ['name', 'runtime', 'image', 'command', 'env', 'secrets', 'routes', 'withHealth'] },
  )
  .map(({ withHealth, ...c }) => {
    const doc: Record<string, unknown> = { ...c };
    if (c.runtime === 'process') delete doc.image;
    if (c.runtime === 'microvm') {
      delete doc.image;
      doc.kernel = '/boot/vmlinuz';
    }
    if (withHealth && c.routes.length > 0) doc.health = { type: 'http', port: c.routes[0].port, path: '/ready' };
    else if (withHealth) doc.health = { type: 'exec', command: ['true'] };
    return doc;
  });
const serviceDoc = fc.record(
  {
    name: dnsLabel,
    description: text,
    update: fc.record({ max_parallel: fc.integer({ min: 1, max: 100 }), health_deadline_seconds: fc.integer({ min: 1, max: 86400 }) }, { requiredKeys: [] }),
    components: fc.uniqueArray(componentDoc, { selector: (c) => c.name, minLength: 1, maxLength: 4 }),
  },
  { requiredKeys: ['name', 'components'] },
);

describe('round trips', () => {
  it('every generated valid document validates, and its TOML and document forms parse back to the same definition', () => {
    fc.assert(
      fc.property(serviceDoc, (doc) => {
        const def = validateServiceDefinition(doc);
        expect(parseServiceDefinition(serviceDefinitionToToml(def))).toEqual(def);
        expect(validateServiceDefinition(serviceDefinitionToDocument(def))).toEqual(def);
      }),
      { numRuns: 150 },
    );
  });
});
