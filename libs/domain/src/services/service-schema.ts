// The JSON Schema of a service definition, as written in TOML (snake_case).
// It is the published contract (`schemas/service-definition.schema.json` is
// this object, byte for byte; a unit test keeps them identical), so editors
// can validate a file before `corral service plan` ever sees it. Rules the
// schema cannot say (unique names, health ports that name a route, legacy
// `ports` agreeing with `routes`) are checked in service-definition.ts.
//
// Conventions the error formatter relies on: a `description` next to a
// `pattern`, `not` or `const` is the message shown when that keyword fails,
// and a `description` on an if/then `then` schema explains a `required` error.

export const COMPONENT_RUNTIMES = ['container', 'microvm', 'unikernel', 'process'] as const;
export const RESTART_POLICIES = ['always', 'on-failure', 'never'] as const;
export const HEALTH_CHECK_TYPES = ['tcp', 'http', 'exec'] as const;
export const SERVICE_ROUTE_MODES = ['l4', 'l7'] as const;
export const SERVICE_ROUTE_PROTOCOLS = ['tcp', 'udp'] as const;

export const SERVICE_LIMITS = {
  /** Characters in a service file. */
  fileMaxLength: 1024 * 1024,
  componentsMax: 50,
  countMax: 1000,
  vcpusMin: 1,
  vcpusMax: 64,
  memoryMbMin: 16,
  memoryMbMax: 262144,
  routesMax: 32,
  envMaxEntries: 256,
  envValueMaxLength: 32768,
  commandMaxArgs: 256,
  argMaxLength: 8192,
  secretsMax: 64,
  labelsMax: 64,
} as const;

export const SERVICE_DEFAULTS = {
  vcpus: 1,
  memoryMb: 256,
  count: 1,
  restartPolicy: 'on-failure',
  restartMaxAttempts: 3,
  restartDelaySeconds: 5,
  healthIntervalSeconds: 10,
  healthTimeoutSeconds: 2,
  healthHealthyThreshold: 1,
  healthUnhealthyThreshold: 3,
  healthHttpPath: '/',
  routeMode: 'l4',
  routeProtocol: 'tcp',
  updateMaxParallel: 1,
  updateHealthDeadlineSeconds: 300,
  updateAutoRevert: true,
} as const;

const DNS_LABEL = '^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$';
const DNS_LABEL_TEXT = 'must be a DNS label: 1-63 lowercase letters, digits or dashes, starting with a letter and not ending with a dash';
const ROUTE_NAME_PATTERN = '^[a-z][a-z0-9-]{0,31}$';
const ROUTE_NAME_TEXT = 'must be 1-32 lowercase letters, digits or dashes, starting with a letter';
const ENV_NAME = '^[A-Za-z_][A-Za-z0-9_]*$';
const LABEL_KEY = '^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$';
const LABEL_KEY_TEXT = 'must be a label name: 1-63 letters, digits, ".", "_", "/" or "-", starting and ending with a letter or digit';

const runtimeIs = (...runtimes: string[]) => ({
  properties: { runtime: runtimes.length === 1 ? { const: runtimes[0] } : { enum: runtimes } },
  required: ['runtime'],
});
const healthTypeIs = (...types: string[]) => ({
  properties: { type: types.length === 1 ? { const: types[0] } : { enum: types } },
  required: ['type'],
});
const forbidden = (description: string) => ({ not: {}, description });

const stringList = (maxItems: number, description: string) => ({
  type: 'array',
  description,
  maxItems,
  items: { type: 'string', maxLength: SERVICE_LIMITS.argMaxLength, pattern: '^[^\\u0000]*$', description: 'must not contain a NUL byte' },
});

const updateProperties = (withDefaults: boolean) => ({
  max_parallel: {
    type: 'integer',
    minimum: 1,
    maximum: 100,
    description: 'instances replaced at once during a rolling update',
    ...(withDefaults ? { default: SERVICE_DEFAULTS.updateMaxParallel } : {}),
  },
  health_deadline_seconds: {
    type: 'integer',
    minimum: 1,
    maximum: 86400,
    description: 'how long a new instance has to become healthy before the update counts as failed',
    ...(withDefaults ? { default: SERVICE_DEFAULTS.updateHealthDeadlineSeconds } : {}),
  },
  auto_revert: {
    type: 'boolean',
    description: 'roll back to the last good version when an update fails',
    ...(withDefaults ? { default: SERVICE_DEFAULTS.updateAutoRevert } : {}),
  },
});

export const SERVICE_DEFINITION_SCHEMA_ID = 'urn:corral:schema:service-definition:v1';

export const SERVICE_DEFINITION_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: SERVICE_DEFINITION_SCHEMA_ID,
  title: 'Corral service definition',
  description:
    'A service and its components, as written in a Corral service file (TOML). Versions are assigned by the server when a definition is deployed.',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'components'],
  properties: {
    name: { type: 'string', pattern: DNS_LABEL, description: DNS_LABEL_TEXT },
    description: { type: 'string', maxLength: 1024 },
    update: { $ref: '#/$defs/serviceUpdate', default: {} },
    components: {
      type: 'array',
      minItems: 1,
      maxItems: SERVICE_LIMITS.componentsMax,
      items: { $ref: '#/$defs/component' },
    },
  },
  $defs: {
    component: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'runtime'],
      properties: {
        name: { type: 'string', pattern: DNS_LABEL, description: DNS_LABEL_TEXT },
        runtime: { enum: [...COMPONENT_RUNTIMES] },
        image: { type: 'string', minLength: 1, maxLength: 1024, description: 'container image, or the disk/unikernel image of a VM' },
        kernel: { type: 'string', minLength: 1, maxLength: 1024, description: 'kernel to boot a microvm directly' },
        initrd: { type: 'string', minLength: 1, maxLength: 1024, description: 'initial ramdisk for the kernel' },
        command: { ...stringList(SERVICE_LIMITS.commandMaxArgs, 'program and arguments; for containers, replaces the image command'), minItems: 1 },
        env: {
          type: 'object',
          maxProperties: SERVICE_LIMITS.envMaxEntries,
          propertyNames: { pattern: ENV_NAME, description: 'must be an environment variable name: letters, digits and "_", not starting with a digit' },
          additionalProperties: { type: 'string', maxLength: SERVICE_LIMITS.envValueMaxLength, pattern: '^[^\\u0000]*$', description: 'must not contain a NUL byte' },
          default: {},
        },
        secrets: {
          type: 'array',
          maxItems: SERVICE_LIMITS.secretsMax,
          uniqueItems: true,
          description: 'names of tenant secrets, injected at deploy as environment variables of the same name',
          items: { type: 'string', pattern: ENV_NAME, description: 'must be a secret name usable as an environment variable: letters, digits and "_", not starting with a digit' },
          default: [],
        },
        resources: {
          type: 'object',
          additionalProperties: false,
          properties: {
            vcpus: { type: 'integer', minimum: SERVICE_LIMITS.vcpusMin, maximum: SERVICE_LIMITS.vcpusMax, default: SERVICE_DEFAULTS.vcpus },
            memory_mb: { type: 'integer', minimum: SERVICE_LIMITS.memoryMbMin, maximum: SERVICE_LIMITS.memoryMbMax, default: SERVICE_DEFAULTS.memoryMb },
          },
          default: {},
        },
        count: { type: 'integer', minimum: 0, maximum: SERVICE_LIMITS.countMax, default: SERVICE_DEFAULTS.count },
        placement: {
          type: 'object',
          additionalProperties: false,
          properties: {
            labels: {
              type: 'object',
              maxProperties: SERVICE_LIMITS.labelsMax,
              description: 'host labels that must all match exactly',
              propertyNames: { pattern: LABEL_KEY, description: LABEL_KEY_TEXT },
              additionalProperties: { type: 'string', maxLength: 256 },
            },
            host: { type: 'string', minLength: 1, maxLength: 253, description: 'pin every instance to this host (id or name)' },
            team: { type: 'string', minLength: 1, maxLength: 128, description: "run only on this team's own (BYOC) hosts" },
            spread_by: { type: 'string', pattern: LABEL_KEY, description: LABEL_KEY_TEXT },
          },
        },
        restart: {
          type: 'object',
          additionalProperties: false,
          properties: {
            policy: { enum: [...RESTART_POLICIES], default: SERVICE_DEFAULTS.restartPolicy },
            max_attempts: {
              type: 'integer',
              minimum: 1,
              maximum: 1000,
              description: 'consecutive failed restarts before the instance is marked failed',
              default: SERVICE_DEFAULTS.restartMaxAttempts,
            },
            delay_seconds: { type: 'integer', minimum: 0, maximum: 3600, default: SERVICE_DEFAULTS.restartDelaySeconds },
          },
          default: {},
        },
        health: { $ref: '#/$defs/health' },
        routes: {
          type: 'array',
          maxItems: SERVICE_LIMITS.routesMax,
          items: { $ref: '#/$defs/route' },
        },
        ports: {
          type: 'array',
          maxItems: SERVICE_LIMITS.routesMax,
          description: 'legacy form of routes: each port becomes an l4 route named port-<n>',
          items: {
            type: ['integer', 'string'],
            minimum: 1,
            maximum: 65535,
            pattern: '^[0-9]{1,5}(/(tcp|udp))?$',
            description: 'must be a port number, or "<port>/tcp" or "<port>/udp"',
          },
        },
        update: {
          type: 'object',
          additionalProperties: false,
          description: "overrides the service's update policy for this component",
          properties: updateProperties(false),
        },
      },
      allOf: [
        { if: runtimeIs('container'), then: { required: ['image'], description: 'a container runs an image' } },
        { if: runtimeIs('unikernel'), then: { required: ['image'], description: 'a unikernel boots an image' } },
        {
          if: { ...runtimeIs('microvm'), not: { required: ['kernel'] } },
          then: { required: ['image'], description: 'a microvm boots a disk image or a kernel' },
        },
        {
          if: runtimeIs('container', 'unikernel', 'process'),
          then: {
            properties: {
              kernel: forbidden('only a microvm boots a kernel'),
              initrd: forbidden('only a microvm boots an initrd'),
            },
          },
        },
        {
          if: runtimeIs('process'),
          then: {
            required: ['command'],
            description: 'a process runs a command on the host',
            properties: { image: forbidden('a process runs on the host and has no image') },
          },
        },
        { dependentRequired: { initrd: ['kernel'] } },
      ],
    },
    route: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'port'],
      properties: {
        name: { type: 'string', pattern: ROUTE_NAME_PATTERN, description: ROUTE_NAME_TEXT },
        port: { type: 'integer', minimum: 1, maximum: 65535, description: 'the port the workload listens on' },
        mode: { enum: [...SERVICE_ROUTE_MODES], default: SERVICE_DEFAULTS.routeMode, description: 'l4 forwards TCP/UDP; l7 is served by the edge router over HTTP(S)' },
        protocol: { enum: [...SERVICE_ROUTE_PROTOCOLS], default: SERVICE_DEFAULTS.routeProtocol },
      },
      allOf: [
        {
          if: { properties: { mode: { const: 'l7' } }, required: ['mode'] },
          then: { properties: { protocol: { const: 'tcp', description: 'an l7 route carries HTTP, so its protocol must be tcp' } } },
        },
      ],
    },
    health: {
      type: 'object',
      additionalProperties: false,
      required: ['type'],
      properties: {
        type: { enum: [...HEALTH_CHECK_TYPES] },
        port: {
          type: ['integer', 'string'],
          minimum: 1,
          maximum: 65535,
          pattern: ROUTE_NAME_PATTERN,
          description: 'must be the name or the port number of one of the routes',
        },
        path: { type: 'string', maxLength: 1024, pattern: '^/[^\\s]*$', description: 'must be an HTTP path starting with "/"' },
        command: { ...stringList(SERVICE_LIMITS.commandMaxArgs, 'program and arguments run inside the instance; exit 0 is healthy'), minItems: 1 },
        interval_seconds: { type: 'integer', minimum: 1, maximum: 3600, default: SERVICE_DEFAULTS.healthIntervalSeconds },
        timeout_seconds: { type: 'integer', minimum: 1, maximum: 3600, default: SERVICE_DEFAULTS.healthTimeoutSeconds },
        healthy_threshold: { type: 'integer', minimum: 1, maximum: 100, default: SERVICE_DEFAULTS.healthHealthyThreshold },
        unhealthy_threshold: { type: 'integer', minimum: 1, maximum: 100, default: SERVICE_DEFAULTS.healthUnhealthyThreshold },
      },
      allOf: [
        { if: healthTypeIs('exec'), then: { required: ['command'], description: 'an exec check runs a command' } },
        {
          if: healthTypeIs('exec'),
          then: { properties: { port: forbidden('an exec check runs a command and has no port'), path: forbidden('only http checks have a path') } },
        },
        { if: healthTypeIs('tcp'), then: { properties: { path: forbidden('only http checks have a path') } } },
        { if: healthTypeIs('tcp', 'http'), then: { properties: { command: forbidden('only exec checks run a command') } } },
      ],
    },
    serviceUpdate: {
      type: 'object',
      additionalProperties: false,
      description: 'how a new version replaces running instances (each component may override it)',
      properties: updateProperties(true),
    },
  },
};
