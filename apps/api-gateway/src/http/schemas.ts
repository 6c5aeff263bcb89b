import {
  INSTANCE_STATES,
  HOST_STATUSES,
  WORKLOAD_DRIVERS,
  WORKLOAD_LIMITS,
  WORKLOAD_ROUTE_NAME,
  WORKLOAD_ROUTE_PROTOCOLS,
  WORKLOAD_VM_MODES,
} from '@corral/domain';
import { LOG_TAIL, REGISTRATION_TOKEN_DESCRIPTION_MAX_LENGTH, REGISTRATION_TOKEN_TTL, RESOURCE_ID } from '../operations/corral-operations';
import { UNKNOWN_STATE } from './views';

// JSON Schemas of the REST API. Request schemas are validated by ajv before a
// handler runs; response schemas drive serialization (fields not listed are
// dropped) and, with the request schemas, the OpenAPI document. Limits come
// from the domain so REST rejects early what the domain would reject anyway.

export const SCHEMA_IDS = {
  error: 'Error',
  workload: 'Workload',
  host: 'Host',
} as const;

const ref = (id: string) => ({ $ref: `${id}#` });
const nullable = (type: string, extra: Record<string, unknown> = {}) => ({ type: [type, 'null'], ...extra });
const timestamp = (description: string) => nullable('string', { format: 'date-time', description });

export const errorSchema = {
  $id: SCHEMA_IDS.error,
  type: 'object',
  description:
    'Every error answer has this shape. `message` is fixed for each `error` code, except invalid_argument which says what to fix, and failed_precondition with `field: placement`, which says why no host can take the workload (e.g. "no host has 4096 MB free; best candidate h-3 has 2048").',
  required: ['error', 'message'],
  properties: {
    error: { type: 'string', examples: ['invalid_argument', 'not_found', 'unauthenticated'] },
    message: { type: 'string' },
    field: { type: 'string', description: 'The request field at fault, e.g. `command[0]` or `env.PATH`.' },
  },
} as const;

const resourcesSchema = {
  type: 'object',
  required: ['cpuMillis', 'memoryMb', 'diskMb'],
  properties: { cpuMillis: { type: 'integer' }, memoryMb: { type: 'integer' }, diskMb: { type: 'integer' } },
} as const;

const routeName = {
  type: 'string',
  pattern: WORKLOAD_ROUTE_NAME.source,
  maxLength: WORKLOAD_LIMITS.routeNameMaxLength,
  description: 'lowercase letters, digits and dashes, starting with a letter; the workload finds its port in `$PORT_<NAME>`',
  examples: ['http'],
} as const;
const portNumber = (description: string) => ({ type: 'integer', minimum: 1, maximum: 65535, description }) as const;
const protocol = { type: 'string', enum: [...WORKLOAD_ROUTE_PROTOCOLS] } as const;

export const workloadSchema = {
  $id: SCHEMA_IDS.workload,
  type: 'object',
  required: [
    'id',
    'name',
    'teamId',
    'driver',
    'command',
    'envKeys',
    'state',
    'hostId',
    'exitCode',
    'reason',
    'createdAt',
    'updatedAt',
    'image',
    'resources',
    'routes',
    'ports',
    'vm',
  ],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    teamId: nullable('string', { description: 'null for platform workloads' }),
    driver: { type: 'string', enum: [...WORKLOAD_DRIVERS] },
    command: { type: 'array', items: { type: 'string' } },
    envKeys: { type: 'array', items: { type: 'string' }, description: 'Names of the environment variables; values are never returned.' },
    state: { type: 'string', enum: [...INSTANCE_STATES, UNKNOWN_STATE] },
    hostId: nullable('string', { description: 'null until placed' }),
    exitCode: nullable('integer', { description: 'null until the workload exited' }),
    reason: nullable('string'),
    createdAt: timestamp('when the workload was created'),
    updatedAt: timestamp('when the workload last changed'),
    image: nullable('string', { description: 'podman: the image; qemu unikernel: the bootable image; null otherwise' }),
    resources: {
      type: 'object',
      required: ['vcpus', 'memoryMb'],
      description: "what the workload may use; null means the driver's default",
      properties: { vcpus: nullable('integer'), memoryMb: nullable('integer') },
    },
    routes: {
      type: 'array',
      description: 'the ports the workload listens on',
      items: {
        type: 'object',
        required: ['name', 'port', 'protocol'],
        properties: { name: { type: 'string' }, port: { type: 'integer' }, protocol },
      },
    },
    ports: {
      type: 'array',
      description: "the host ports its host gave the routes: empty until it runs and once it has stopped",
      items: {
        type: 'object',
        required: ['name', 'guestPort', 'hostPort', 'protocol'],
        properties: {
          name: { type: 'string' },
          guestPort: { type: 'integer', description: 'the port the workload listens on' },
          hostPort: { type: 'integer', description: "the port on the workload's host that reaches it" },
          protocol,
        },
      },
    },
    vm: {
      type: ['object', 'null'],
      description: 'qemu only: how the VM boots',
      required: ['mode', 'kernel', 'initrd', 'kernelArgs'],
      properties: {
        mode: { type: 'string', enum: [...WORKLOAD_VM_MODES] },
        kernel: nullable('string'),
        initrd: nullable('string'),
        kernelArgs: nullable('string'),
        rootDisk: { ...nullable('string'), description: 'microvm: the base image its root disk was cloned from' },
      },
    },
  },
} as const;

export const hostSchema = {
  $id: SCHEMA_IDS.host,
  type: 'object',
  required: ['id', 'name', 'status', 'teamId', 'resources', 'drivers', 'labels', 'lastHeartbeatAt', 'createdAt'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    status: { type: 'string', enum: [...HOST_STATUSES, UNKNOWN_STATE] },
    teamId: nullable('string', { description: 'null for platform hosts; the owning team for BYOC hosts' }),
    resources: {
      type: 'object',
      required: ['capacity', 'usage'],
      properties: { capacity: resourcesSchema, usage: resourcesSchema },
    },
    drivers: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'healthy', 'version'],
        properties: { name: { type: 'string' }, healthy: { type: 'boolean' }, version: { type: 'string' } },
      },
    },
    labels: { type: 'object', additionalProperties: { type: 'string' } },
    lastHeartbeatAt: timestamp('when the host last reported in'),
    createdAt: timestamp('when the host registered'),
  },
} as const;

export const sharedSchemas = [errorSchema, workloadSchema, hostSchema];

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'invalid_argument: the request is malformed; `field` names the culprit',
  401: 'unauthenticated: missing, unknown or revoked API key',
  403: 'permission_denied',
  404: 'not_found',
  409: 'conflict, already_exists or failed_precondition',
  413: 'payload_too_large',
  415: 'unsupported_media_type: send application/json',
  429: 'resource_exhausted',
  500: 'internal',
  503: 'unavailable: a backend service cannot be reached',
};
export const errorResponses = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((s) => [s, { description: ERROR_DESCRIPTIONS[s], ...ref(SCHEMA_IDS.error) }]));
/** Answers any authenticated route may give besides its own. */
export const authenticatedErrors = errorResponses(400, 401, 403, 500, 503);

export const idParams = {
  type: 'object',
  additionalProperties: false,
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: RESOURCE_ID.maxLength, pattern: RESOURCE_ID.pattern } },
} as const;

export const workloadSpecBody = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'driver'],
  properties: {
    name: {
      type: 'string',
      minLength: 1,
      maxLength: WORKLOAD_LIMITS.nameMaxLength,
      description: 'lowercase letters, digits and dashes, starting and ending with a letter or digit',
      examples: ['web-1'],
    },
    driver: { type: 'string', enum: [...WORKLOAD_DRIVERS] },
    command: {
      type: 'array',
      minItems: 1,
      maxItems: WORKLOAD_LIMITS.commandMaxArgs,
      items: { type: 'string', maxLength: WORKLOAD_LIMITS.argMaxLength },
      description: "argv: the program, then its arguments. Never run through a shell. Required for the process driver; podman runs the image's own command without it.",
      examples: [['sleep', '60']],
    },
    image: {
      type: 'string',
      minLength: 1,
      maxLength: WORKLOAD_LIMITS.imageMaxLength,
      description: 'podman: an image reference (required); qemu unikernel: the bootable image (required)',
      examples: ['localhost/busybox:latest'],
    },
    resources: {
      type: 'object',
      additionalProperties: false,
      description: "what the workload may use; an absent field means the driver's default",
      properties: {
        vcpus: { type: 'integer', minimum: WORKLOAD_LIMITS.vcpus.min, maximum: WORKLOAD_LIMITS.vcpus.max },
        memoryMb: { type: 'integer', minimum: WORKLOAD_LIMITS.memoryMb.min, maximum: WORKLOAD_LIMITS.memoryMb.max },
      },
    },
    routes: {
      type: 'array',
      maxItems: WORKLOAD_LIMITS.routesMaxEntries,
      description: 'ports the workload listens on; each gets a host port, and `$PORT` / `$PORT_<NAME>` in its environment say where to listen',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'port'],
        properties: {
          name: routeName,
          port: portNumber('the port the workload listens on (inside its sandbox)'),
          protocol: { ...protocol, description: 'default tcp' },
        },
      },
      examples: [[{ name: 'http', port: 8080, protocol: 'tcp' }]],
    },
    vm: {
      type: 'object',
      additionalProperties: false,
      required: ['mode'],
      description: 'qemu only: how the VM boots',
      properties: {
        mode: { type: 'string', enum: [...WORKLOAD_VM_MODES], description: 'microvm: direct kernel boot (needs kernel); unikernel: boots `image`' },
        kernel: { type: 'string', minLength: 1, maxLength: WORKLOAD_LIMITS.vmPathMaxLength },
        initrd: { type: 'string', minLength: 1, maxLength: WORKLOAD_LIMITS.vmPathMaxLength },
        kernelArgs: { type: 'string', maxLength: WORKLOAD_LIMITS.kernelArgsMaxLength },
        rootDisk: {
          type: 'string',
          minLength: 1,
          maxLength: WORKLOAD_LIMITS.vmPathMaxLength,
          pattern: '^/',
          description: "microvm: a disk image on the host (raw or qcow2, never written) cloned copy-on-write into the VM's own root disk (/dev/vda) before it boots",
        },
      },
    },
    env: {
      type: 'object',
      maxProperties: WORKLOAD_LIMITS.envMaxEntries,
      propertyNames: { pattern: '^[A-Za-z_][A-Za-z0-9_]*$' },
      additionalProperties: { type: 'string', maxLength: WORKLOAD_LIMITS.envValueMaxLength },
    },
  },
} as const;

export const registrationTokenBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    ttlSeconds: {
      type: 'integer',
      minimum: REGISTRATION_TOKEN_TTL.minSeconds,
      maximum: REGISTRATION_TOKEN_TTL.maxSeconds,
      description: `seconds until the token expires (default ${REGISTRATION_TOKEN_TTL.defaultSeconds})`,
    },
    description: { type: 'string', maxLength: REGISTRATION_TOKEN_DESCRIPTION_MAX_LENGTH },
    scope: {
      type: 'object',
      additionalProperties: false,
      description: 'which hosts may register with the token (absent: any host); a host outside it is refused like a bad token, and the token stays unused',
      properties: {
        namePattern: { type: 'string', maxLength: 253, description: 'glob over the host name: `*` any run of characters, `?` one; case-insensitive' },
        labels: {
          type: 'object',
          maxProperties: 64,
          additionalProperties: { type: 'string', maxLength: 253 },
          description: 'labels the host must register with, each with exactly this value',
        },
      },
    },
  },
} as const;

export const routeSchemas = {
  whoAmI: {
    tags: ['auth'],
    summary: 'Who the presented API key belongs to',
    response: {
      200: {
        type: 'object',
        required: ['keyId', 'admin', 'teamId'],
        properties: { keyId: { type: 'string' }, admin: { type: 'boolean' }, teamId: nullable('string') },
      },
      ...authenticatedErrors,
    },
  },
  createRegistrationToken: {
    tags: ['hosts'],
    summary: 'Create a one-time host registration token',
    description: 'With an admin key the token registers a platform host; with a team key, a host of that team (BYOC). The token is shown once.',
    body: registrationTokenBody,
    response: {
      201: {
        type: 'object',
        required: ['id', 'token', 'expiresAt'],
        properties: { id: { type: 'string' }, token: { type: 'string' }, expiresAt: { type: 'string', format: 'date-time' } },
      },
      ...authenticatedErrors,
      ...errorResponses(413, 415),
    },
  },
  listHosts: {
    tags: ['hosts'],
    summary: 'List the hosts visible to the caller',
    response: {
      200: { type: 'object', required: ['hosts'], properties: { hosts: { type: 'array', items: ref(SCHEMA_IDS.host) } } },
      ...authenticatedErrors,
    },
  },
  getHost: {
    tags: ['hosts'],
    summary: 'Get one host',
    params: idParams,
    response: { 200: ref(SCHEMA_IDS.host), ...authenticatedErrors, ...errorResponses(404) },
  },
  createWorkload: {
    tags: ['workloads'],
    summary: 'Run a workload',
    body: workloadSpecBody,
    response: { 201: ref(SCHEMA_IDS.workload), ...authenticatedErrors, ...errorResponses(409, 413, 415, 429) },
  },
  listWorkloads: {
    tags: ['workloads'],
    summary: 'List the workloads visible to the caller',
    response: {
      200: { type: 'object', required: ['workloads'], properties: { workloads: { type: 'array', items: ref(SCHEMA_IDS.workload) } } },
      ...authenticatedErrors,
    },
  },
  getWorkload: {
    tags: ['workloads'],
    summary: 'Get one workload',
    params: idParams,
    response: { 200: ref(SCHEMA_IDS.workload), ...authenticatedErrors, ...errorResponses(404) },
  },
  deleteWorkload: {
    tags: ['workloads'],
    summary: 'Stop a workload, or with purge=true tear it down',
    description:
      'Idempotent. Without purge it stops the workload: 202 while it is still stopping, 200 once it has stopped. ' +
      'With purge=true it also tears the workload down on its host (stopping it first if it still runs): its container or VM, volume, host ports, logs and snapshots are removed, ' +
      'and the answer (200) is the workload in state retired. A workload whose host was deleted or is down is retired without teardown, with the reason. ' +
      '503 when its host cannot be reached: the workload stays tearing_down and repeating the call finishes it.',
    params: idParams,
    querystring: {
      type: 'object',
      additionalProperties: false,
      properties: {
        purge: { type: 'boolean', default: false, description: 'tear the workload down after stopping it (nothing is left on its host); the answer is the workload in state retired' },
      },
    },
    response: {
      200: ref(SCHEMA_IDS.workload),
      202: ref(SCHEMA_IDS.workload),
      ...authenticatedErrors,
      ...errorResponses(404, 409),
    },
  },
  pauseWorkload: {
    tags: ['workloads'],
    summary: 'Pause a workload',
    description: 'Freezes a running workload in place. Idempotent: pausing a paused workload returns it. 409 when it is not running or its driver cannot pause.',
    params: idParams,
    response: { 200: ref(SCHEMA_IDS.workload), ...authenticatedErrors, ...errorResponses(404, 409) },
  },
  resumeWorkload: {
    tags: ['workloads'],
    summary: 'Resume a paused workload',
    description: 'Idempotent: resuming a running workload returns it. 409 when it is neither paused nor running.',
    params: idParams,
    response: { 200: ref(SCHEMA_IDS.workload), ...authenticatedErrors, ...errorResponses(404, 409) },
  },
  getWorkloadLogs: {
    tags: ['workloads'],
    summary: "The end of a workload's output",
    description:
      'Plain text; the header `X-Corral-Logs-Truncated: true` says earlier output was left out. With `follow=true` the tail is followed by new output, streamed (chunked) until the workload ends or the client disconnects; the truncated header is not sent then.',
    params: idParams,
    querystring: {
      type: 'object',
      additionalProperties: false,
      properties: {
        tail: { type: 'integer', minimum: 1, maximum: LOG_TAIL.maxBytes, description: `bytes from the end (default ${LOG_TAIL.defaultBytes})` },
        follow: {
          type: 'boolean',
          description: 'keep the response open (chunked) and send new output as it is written, until the workload ends or the client disconnects',
        },
      },
    },
    response: {
      200: { description: 'the log bytes', content: { 'text/plain': { schema: { type: 'string' } } } },
      ...authenticatedErrors,
      ...errorResponses(404),
    },
  },
  health: {
    tags: ['health'],
    summary: 'Liveness: the gateway process is up',
    security: [],
    response: { 200: { type: 'object', required: ['status'], properties: { status: { type: 'string' } } } },
  },
  ready: {
    tags: ['health'],
    summary: 'Readiness: the gateway can reach what it depends on',
    security: [],
    response: {
      '2xx': readinessSchema(),
      503: readinessSchema(),
    },
  },
} as const;

function readinessSchema() {
  return {
    type: 'object',
    required: ['status', 'checks'],
    properties: {
      status: { type: 'string', enum: ['ready', 'not_ready'] },
      checks: { type: 'object', additionalProperties: { type: 'string', enum: ['ok', 'failing'] } },
    },
  };
}
