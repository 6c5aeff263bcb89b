import { TOKEN_STATES } from './fleet-views';
import { SCHEMA_IDS, authenticatedErrors, errorResponses, idParams } from './schemas';

// JSON Schemas of the fleet membership routes (fleet-routes.ts): drain,
// undrain, delete, fleet health, registration token list and revoke.

export const FLEET_SCHEMA_IDS = {
  registrationToken: 'RegistrationToken',
  hostDeletion: 'HostDeletion',
  hostInUse: 'HostInUse',
  fleetHealth: 'FleetHealth',
  workloadMigration: 'WorkloadMigration',
} as const;

const ref = (id: string) => ({ $ref: `${id}#` });
const nullable = (type: string, extra: Record<string, unknown> = {}) => ({ type: [type, 'null'], ...extra });
const timestamp = (description: string) => nullable('string', { format: 'date-time', description });
const ids = (description: string) => ({ type: 'array', items: { type: 'string' }, description });

export const registrationTokenSchema = {
  $id: FLEET_SCHEMA_IDS.registrationToken,
  type: 'object',
  description: 'A registration token as listed. Its secret is shown only once, when it is created; neither it nor its hash is ever listed.',
  required: ['id', 'description', 'teamId', 'state', 'createdAt', 'expiresAt', 'usedAt', 'usedByHostId', 'revokedAt', 'scope'],
  properties: {
    id: { type: 'string' },
    description: { type: 'string' },
    teamId: nullable('string', { description: 'null for platform tokens; the team whose host registers with it otherwise (BYOC)' }),
    state: { type: 'string', enum: [...TOKEN_STATES], description: 'revoked, else used, else expired, else active' },
    createdAt: timestamp('when it was created'),
    expiresAt: timestamp('when it stops being accepted'),
    usedAt: timestamp('when a host registered with it'),
    usedByHostId: nullable('string', { description: 'the host that registered with it' }),
    revokedAt: timestamp('when it was revoked'),
    scope: {
      type: 'object',
      required: ['namePattern', 'labels'],
      description: 'which hosts may register with it',
      properties: {
        namePattern: nullable('string', { description: 'glob over the host name; null: any name' }),
        labels: { type: 'object', additionalProperties: { type: 'string' }, description: 'labels the host must register with' },
      },
    },
  },
} as const;

export const hostDeletionSchema = {
  $id: FLEET_SCHEMA_IDS.hostDeletion,
  type: 'object',
  required: ['id', 'deletedNow', 'affectedWorkloads', 'stoppedWorkloads', 'unreachableWorkloads'],
  properties: {
    id: { type: 'string' },
    deletedNow: { type: 'boolean', description: 'false when the host had already been deleted' },
    affectedWorkloads: ids("live workloads the host's last heartbeat reported when it was deleted"),
    stoppedWorkloads: ids('workloads stopped first (force)'),
    unreachableWorkloads: ids('workloads whose stop did not get through to the host (unreachable, or no answer in time; force); the reconciler finishes them'),
  },
} as const;

export const hostInUseSchema = {
  $id: FLEET_SCHEMA_IDS.hostInUse,
  type: 'object',
  description: 'A refused host delete: the workloads still live on the host. Stop them, or delete with `force=true`.',
  required: ['error', 'message'],
  properties: {
    error: { type: 'string', examples: ['failed_precondition'] },
    message: { type: 'string' },
    field: { type: 'string' },
    affectedWorkloads: ids("the host's live workloads; empty when only the host's own last report still lists some"),
  },
} as const;

export const fleetHealthSchema = {
  $id: FLEET_SCHEMA_IDS.fleetHealth,
  type: 'object',
  description: "Failure detection as host-registry sees it: the monitoring leader's brake, and the answering replica's connections and heartbeat intake.",
  required: ['leader', 'epoch', 'brake', 'lastCheckAt', 'busConnected', 'databaseHealthy', 'heartbeats', 'hostsByStatus'],
  properties: {
    leader: { type: 'boolean', description: 'whether the answering replica is the monitoring leader' },
    epoch: { type: 'integer', description: 'fencing epoch, bumped at every leadership change' },
    brake: {
      type: 'object',
      required: ['active', 'reasons', 'detail', 'since'],
      description: 'while active, no host is marked unreachable',
      properties: {
        active: { type: 'boolean' },
        reasons: { type: 'array', items: { type: 'string', enum: ['unspecified', 'bus_unhealthy', 'database_unhealthy', 'mass_silence'] } },
        detail: nullable('string'),
        since: timestamp('when the brake engaged'),
      },
    },
    lastCheckAt: timestamp('when the leader last checked for silent hosts'),
    busConnected: { type: 'boolean' },
    databaseHealthy: { type: 'boolean' },
    heartbeats: {
      type: 'object',
      required: ['received', 'applied', 'dropped', 'latencyP50Ms', 'latencyP99Ms', 'flushP99Ms'],
      properties: {
        received: { type: 'integer' },
        applied: { type: 'integer' },
        dropped: { type: 'integer' },
        latencyP50Ms: { type: 'number', description: 'receive-to-stored latency of recent heartbeats' },
        latencyP99Ms: { type: 'number' },
        flushP99Ms: { type: 'number', description: 'duration of recent batched writes' },
      },
    },
    hostsByStatus: { type: 'object', additionalProperties: { type: 'integer' }, description: 'hosts (not deleted) by status' },
  },
} as const;

export const workloadMigrationSchema = {
  $id: FLEET_SCHEMA_IDS.workloadMigration,
  type: 'object',
  description: 'What a drain with migrate did to one workload that was live on the host.',
  required: ['workloadId', 'name', 'outcome', 'replacementId', 'toHostId', 'reason'],
  properties: {
    workloadId: { type: 'string' },
    name: { type: 'string' },
    outcome: { type: 'string', enum: ['moved', 'failed'], description: 'moved: the replacement runs and the original is retired; failed: see reason (the original keeps running unless it says otherwise)' },
    replacementId: nullable('string', { description: 'the new workload (same spec and service slot), if one was created' }),
    toHostId: nullable('string', { description: "the replacement's host" }),
    reason: { type: 'string' },
  },
} as const;

export const fleetSharedSchemas = [registrationTokenSchema, hostDeletionSchema, hostInUseSchema, fleetHealthSchema, workloadMigrationSchema];

export const fleetRouteSchemas = {
  drainHost: {
    tags: ['hosts'],
    summary: 'Drain a host',
    description:
      'The host takes no new placements; what runs there keeps running. Idempotent. Team keys manage their own team\'s hosts (403 on a platform host); admin keys any host. ' +
      'With `migrate=true` its live workloads are then moved: each gets a replacement with the same spec (and service slot) on another host, which must be running before the original is stopped and torn down, `max_parallel` at a time; the answer lists each outcome in `migrations`. Running it again after an interruption carries on with the replacements already made.',
    params: idParams,
    querystring: {
      type: 'object',
      additionalProperties: false,
      properties: {
        migrate: { type: 'boolean', default: false, description: "also move the host's live workloads to other hosts" },
        max_parallel: { type: 'integer', minimum: 1, maximum: 64, default: 1, description: 'with migrate: workloads moved at once' },
      },
    },
    response: {
      200: {
        description: 'The host; with migrate, also what happened to each of its workloads.',
        allOf: [ref(SCHEMA_IDS.host), { type: 'object', properties: { migrations: { type: 'array', items: ref(FLEET_SCHEMA_IDS.workloadMigration) } } }],
      },
      ...authenticatedErrors,
      ...errorResponses(404, 409),
    },
  },
  undrainHost: {
    tags: ['hosts'],
    summary: 'Undrain a host',
    description: 'The host takes placements again. Idempotent; 409 when it is neither draining nor online.',
    params: idParams,
    response: { 200: ref(SCHEMA_IDS.host), ...authenticatedErrors, ...errorResponses(404, 409) },
  },
  deleteHost: {
    tags: ['hosts'],
    summary: 'Remove a host from the fleet',
    description:
      'Refused with 409 and `affectedWorkloads` while workloads still live on the host, unless `force=true`: then the host is drained, its workloads are stopped, and it is deleted. A deleted host can no longer heartbeat or refresh its credentials. Idempotent: deleting it again answers `deletedNow: false`.',
    params: idParams,
    querystring: {
      type: 'object',
      additionalProperties: false,
      properties: { force: { type: 'boolean', description: "stop the host's workloads first instead of refusing" } },
    },
    response: { 200: ref(FLEET_SCHEMA_IDS.hostDeletion), ...authenticatedErrors, ...errorResponses(404), 409: { description: 'failed_precondition: workloads still live on the host', ...ref(FLEET_SCHEMA_IDS.hostInUse) } },
  },
  fleetHealth: {
    tags: ['fleet'],
    summary: 'Fleet failure detection health (admin keys only)',
    response: { 200: ref(FLEET_SCHEMA_IDS.fleetHealth), ...authenticatedErrors },
  },
  listRegistrationTokens: {
    tags: ['hosts'],
    summary: 'List host registration tokens',
    description: "A team key sees its team's tokens, an admin key every token. Newest first; never a token's secret or hash.",
    response: {
      200: { type: 'object', required: ['tokens'], properties: { tokens: { type: 'array', items: ref(FLEET_SCHEMA_IDS.registrationToken) } } },
      ...authenticatedErrors,
    },
  },
  revokeRegistrationToken: {
    tags: ['hosts'],
    summary: 'Revoke a host registration token',
    description: 'Idempotent: revoking a revoked token returns it unchanged. Another team\'s token (or, for a team key, a platform token) is 404.',
    params: idParams,
    response: { 200: ref(FLEET_SCHEMA_IDS.registrationToken), ...authenticatedErrors, ...errorResponses(404) },
  },
} as const;
