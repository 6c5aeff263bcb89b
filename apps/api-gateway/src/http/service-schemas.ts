import { SERVICE_LIMITS } from '@corral/domain';
import { SERVICE_NAME_PATTERN } from '../operations/service-operations';
import { authenticatedErrors, errorResponses, SCHEMA_IDS } from './schemas';

// JSON Schemas (request validation + OpenAPI) of the service routes. The
// definition itself is TOML, validated against the published service
// definition schema (schemas/service-definition.schema.json) by the
// operations, with errors naming the path inside the file.

const ref = (id: string) => ({ $ref: `${id}#` });
const timestamp = { type: ['string', 'null'], format: 'date-time' } as const;

export const SERVICE_SCHEMA_IDS = { service: 'Service', plan: 'ServicePlan', deployment: 'ServiceDeployment' } as const;

const change = {
  type: 'object',
  required: ['field', 'kind', 'impact'],
  properties: {
    field: { type: 'string', description: 'the TOML field, e.g. `image`, `env.LOG_LEVEL`, `routes.web.port`' },
    kind: { type: 'string', enum: ['add', 'remove', 'change'] },
    from: {},
    to: {},
    impact: { type: 'string', enum: ['replace', 'reschedule', 'in-place'], description: 'replace: instances are replaced (rolling); reschedule: those whose host no longer fits move' },
  },
} as const;

export const servicePlanSchema = {
  $id: SERVICE_SCHEMA_IDS.plan,
  type: 'object',
  required: ['service', 'action', 'fromVersion', 'toDigest', 'serviceChanges', 'components', 'summary'],
  properties: {
    service: { type: 'string' },
    action: { type: 'string', enum: ['create', 'update', 'unchanged'] },
    fromVersion: { type: 'integer', description: 'the deployed version planned against; 0 for a new service' },
    fromDigest: { type: ['string', 'null'] },
    toDigest: { type: 'string' },
    serviceChanges: { type: 'array', items: change },
    components: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'action', 'countFrom', 'countTo', 'replacesInstances', 'reschedules', 'changes'],
        properties: {
          name: { type: 'string' },
          action: { type: 'string', enum: ['create', 'update', 'scale', 'remove', 'unchanged'] },
          countFrom: { type: 'integer' },
          countTo: { type: 'integer' },
          replacesInstances: { type: 'boolean' },
          reschedules: { type: 'boolean' },
          changes: { type: 'array', items: change },
        },
      },
    },
    summary: { type: 'array', items: { type: 'string' }, description: 'what `corral service plan` prints, one line each' },
  },
} as const;

export const serviceDeploymentSchema = {
  $id: SERVICE_SCHEMA_IDS.deployment,
  type: 'object',
  required: ['id', 'fromVersion', 'toVersion', 'state', 'stepsTotal', 'stepsDone', 'events'],
  properties: {
    id: { type: 'string' },
    fromVersion: { type: 'integer' },
    toVersion: { type: 'integer' },
    state: { type: 'string', enum: ['running', 'succeeded', 'failed', 'reverted', 'interrupted'] },
    reason: { type: ['string', 'null'], description: 'why it failed or was reverted' },
    stepsTotal: { type: 'integer' },
    stepsDone: { type: 'integer' },
    events: { type: 'array', items: { type: 'string' }, description: 'what happened, oldest first' },
    createdAt: timestamp,
    updatedAt: timestamp,
  },
} as const;

export const serviceSchema = {
  $id: SERVICE_SCHEMA_IDS.service,
  type: 'object',
  required: ['id', 'name', 'currentVersion', 'state', 'versions', 'instances', 'components'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    teamId: { type: ['string', 'null'] },
    currentVersion: { type: 'integer', description: 'the version whose instances should run; 0 until a rollout succeeded' },
    state: { type: 'string', enum: ['deploying', 'running', 'degraded', 'stopped', 'removed'] },
    createdAt: timestamp,
    updatedAt: timestamp,
    versions: {
      type: 'array',
      description: 'newest first (GET /v1/services/{name} only)',
      items: {
        type: 'object',
        required: ['version', 'status', 'digest'],
        properties: {
          version: { type: 'integer' },
          status: { type: 'string', enum: ['deploying', 'active', 'failed', 'reverted', 'superseded'] },
          digest: { type: 'string' },
          source: { type: 'string', description: 'the TOML text as deployed' },
          createdAt: timestamp,
        },
      },
    },
    instances: {
      type: 'array',
      description: 'instances not retired, with their workloads (host, ports); GET /v1/services/{name} only',
      items: {
        type: 'object',
        required: ['component', 'index', 'version'],
        properties: { component: { type: 'string' }, index: { type: 'integer' }, version: { type: 'integer' }, workload: ref(SCHEMA_IDS.workload) },
      },
    },
    latestDeployment: { anyOf: [ref(SERVICE_SCHEMA_IDS.deployment), { type: 'null' }] },
    components: {
      type: 'array',
      description: 'the component registry: every component deployed until purged',
      items: {
        type: 'object',
        required: ['name', 'state', 'lastVersion'],
        properties: { name: { type: 'string' }, state: { type: 'string', enum: ['active', 'removed'] }, lastVersion: { type: 'integer' } },
      },
    },
  },
} as const;

export const serviceSharedSchemas = [servicePlanSchema, serviceDeploymentSchema, serviceSchema];

const nameParams = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: { name: { type: 'string', minLength: 1, maxLength: 63, pattern: SERVICE_NAME_PATTERN } },
} as const;

const definitionBody = {
  description:
    'The service definition: its TOML text as `application/toml`, or JSON `{"definition": "<toml>"}`. Validated against the published schema (`schemas/service-definition.schema.json`); a 400 names the path inside the file, e.g. `components[1].routes[0].port`.',
  content: {
    'application/toml': { schema: { type: 'string', maxLength: SERVICE_LIMITS.fileMaxLength } },
    'application/json': {
      schema: {
        type: 'object',
        additionalProperties: false,
        required: ['definition'],
        properties: { definition: { type: 'string', minLength: 1, maxLength: SERVICE_LIMITS.fileMaxLength, description: 'the TOML text' } },
      },
    },
  },
} as const;

const idempotencyHeaders = {
  type: 'object',
  properties: {
    'idempotency-key': {
      type: 'string',
      description: 'Makes the request safe to retry: the same key with the same request answers the stored result (`Idempotent-Replayed: true`); with a different request, 422; while the first is still running, 409.',
    },
  },
} as const;

const idempotencyErrors = {
  422: { description: 'idempotency_key_reused: the Idempotency-Key was used with a different request', ...ref(SCHEMA_IDS.error) },
};

const purgeResult = {
  type: 'object',
  required: ['dryRun', 'purged', 'refused', 'serviceDeleted'],
  properties: {
    dryRun: { type: 'boolean' },
    purged: { type: 'array', items: { type: 'object', required: ['name', 'reason'], properties: { name: { type: 'string' }, reason: { type: 'string' } } } },
    refused: { type: 'array', items: { type: 'object', required: ['name', 'reason'], properties: { name: { type: 'string' }, reason: { type: 'string' } } } },
    serviceDeleted: { type: 'boolean' },
  },
} as const;

export const serviceRouteSchemas = {
  planService: {
    tags: ['services'],
    summary: 'Show what deploying a service definition would change',
    description: 'A diff against the deployed version, per component: create / update / scale / remove, and which changes replace instances. Nothing is recorded.',
    body: definitionBody,
    response: { 200: ref(SERVICE_SCHEMA_IDS.plan), ...authenticatedErrors, ...errorResponses(413, 415) },
  },
  deployService: {
    tags: ['services'],
    summary: 'Deploy a service definition (its next version)',
    description:
      'Records the definition as the next version and starts the rollout: missing instances are created, changed ones replaced `update.max_parallel` at a time, each new instance must pass its health check within `update.health_deadline_seconds` before the old one is stopped; on failure the previous version is restored (`auto_revert`). Answers 202 once the rollout has started (follow it with GET /v1/services/{name}); 200 when the definition is what already runs. 409 while another rollout of the service runs.',
    headers: idempotencyHeaders,
    body: definitionBody,
    response: {
      200: { type: 'object', required: ['service', 'plan'], properties: { service: ref(SERVICE_SCHEMA_IDS.service), deployment: { anyOf: [ref(SERVICE_SCHEMA_IDS.deployment), { type: 'null' }] }, plan: ref(SERVICE_SCHEMA_IDS.plan) } },
      202: { type: 'object', required: ['service', 'plan'], properties: { service: ref(SERVICE_SCHEMA_IDS.service), deployment: { anyOf: [ref(SERVICE_SCHEMA_IDS.deployment), { type: 'null' }] }, plan: ref(SERVICE_SCHEMA_IDS.plan) } },
      ...authenticatedErrors,
      ...errorResponses(409, 413, 415),
      ...idempotencyErrors,
    },
  },
  listServices: {
    tags: ['services'],
    summary: 'List the services visible to the caller',
    response: { 200: { type: 'object', required: ['services'], properties: { services: { type: 'array', items: ref(SERVICE_SCHEMA_IDS.service) } } }, ...authenticatedErrors },
  },
  getService: {
    tags: ['services'],
    summary: 'Get a service: versions, instances with hosts and ports, the latest rollout',
    params: nameParams,
    response: { 200: ref(SERVICE_SCHEMA_IDS.service), ...authenticatedErrors, ...errorResponses(404) },
  },
  stopService: {
    tags: ['services'],
    summary: 'Stop every instance of a service (the service and its definition stay)',
    params: nameParams,
    headers: idempotencyHeaders,
    response: { 200: ref(SERVICE_SCHEMA_IDS.service), ...authenticatedErrors, ...errorResponses(404, 409), ...idempotencyErrors },
  },
  undeployService: {
    tags: ['services'],
    summary: 'Undeploy a service: stop and tear down every instance, mark it removed',
    description: 'Idempotent. The service stays listed (state `removed`) until its components are purged.',
    params: nameParams,
    headers: idempotencyHeaders,
    response: { 200: ref(SERVICE_SCHEMA_IDS.service), ...authenticatedErrors, ...errorResponses(404, 409), ...idempotencyErrors },
  },
  purgeComponents: {
    tags: ['services'],
    summary: "Purge a service's components that are gone and unwanted",
    description:
      'Removes registry entries of components in no current definition whose workloads are all retired or failed; components with running or stopped workloads are refused (with why). The service goes with its last component. `dry_run=true` lists what would be purged and changes nothing.',
    params: nameParams,
    headers: idempotencyHeaders,
    querystring: { type: 'object', additionalProperties: false, properties: { dry_run: { type: 'boolean', default: false } } },
    response: { 200: purgeResult, ...authenticatedErrors, ...errorResponses(404, 409), ...idempotencyErrors },
  },
} as const;
