import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { OperationContext } from '../operations/corral-operations';
import { EVENT_KINDS, MAX_EVENT_LIMIT, type EventFilter, type EventOperations } from '../operations/event-operations';
import { authenticatedErrors } from './schemas';

// GET /v1/events: the audit trail, as one JSON page or (follow=true) as an
// NDJSON stream of entries: the backlog, then new entries as they come.

export interface EventRouteOptions {
  events: EventOperations;
  callerOf(request: FastifyRequest): OperationContext;
}

const eventSchema = {
  type: 'object',
  required: ['id', 'at', 'actor', 'kind', 'action', 'outcome', 'subjectType', 'subjectId', 'reason', 'data'],
  properties: {
    id: { type: 'string', description: 'orders the trail; pass the last one as `after` to continue' },
    at: { type: 'string', format: 'date-time' },
    actor: { type: 'string', description: 'e.g. reconciler/<replica>' },
    kind: { type: 'string', enum: [...EVENT_KINDS] },
    action: { type: 'string', description: 'e.g. vanished, restart, reap-orphan, mark-missing' },
    outcome: { type: 'string', enum: ['observed', 'succeeded', 'failed', 'skipped'] },
    subjectType: { type: 'string', enum: ['workload', 'host'] },
    subjectId: { type: 'string' },
    teamId: { type: ['string', 'null'] },
    reason: { type: 'string' },
    data: { type: 'object', additionalProperties: true },
  },
} as const;

const listEventsSchema = {
  tags: ['events'],
  summary: 'The audit trail: drift seen and actions taken, with reasons',
  description:
    'Oldest first. An admin sees every entry, a team only entries about its own workloads and hosts. With `follow=true` the answer is newline-delimited JSON (`application/x-ndjson`), one entry per line: the backlog, then every new entry as it is recorded, until the client disconnects (continued by id: no gaps, no duplicates).',
  querystring: {
    type: 'object',
    additionalProperties: false,
    properties: {
      since: { type: 'string', format: 'date-time', description: 'only entries at or after this time' },
      after: { type: 'string', pattern: '^[0-9]{1,19}$', description: 'only entries after this id' },
      subject: { type: 'string', minLength: 1, maxLength: 128, description: 'only entries about this workload or host id' },
      kind: { type: 'string', enum: [...EVENT_KINDS] },
      limit: { type: 'integer', minimum: 1, maximum: MAX_EVENT_LIMIT, description: 'at most this many (default 100; for follow, of the backlog)' },
      follow: { type: 'boolean', description: 'stream new entries as NDJSON' },
    },
  },
  response: {
    200: {
      description: 'a page of entries, or with follow an NDJSON stream of them',
      content: {
        'application/json': { schema: { type: 'object', required: ['events'], properties: { events: { type: 'array', items: eventSchema } } } },
        'application/x-ndjson': { schema: { type: 'string' } },
      },
    },
    ...authenticatedErrors,
  },
} as const;

interface EventQuery {
  since?: string;
  after?: string;
  subject?: string;
  kind?: string;
  limit?: number;
  follow?: boolean;
}

function filterOf(query: EventQuery): EventFilter {
  return {
    ...(query.after ? { afterId: BigInt(query.after) } : {}),
    ...(query.since ? { since: new Date(query.since) } : {}),
    ...(query.subject ? { subjectId: query.subject } : {}),
    ...(query.kind ? { kind: query.kind } : {}),
    ...(query.limit ? { limit: query.limit } : {}),
  };
}

/** Aborts when the response is over (sent, or the client went away). */
function gone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => controller.abort());
  return controller.signal;
}

export async function registerEventRoutes(api: FastifyInstance, options: EventRouteOptions): Promise<void> {
  const { events, callerOf } = options;
  api.get<{ Querystring: EventQuery }>('/v1/events', { schema: listEventsSchema }, async (request, reply) => {
    const filter = filterOf(request.query);
    if (!request.query.follow) return { events: await events.listEvents(callerOf(request), filter) };
    const entries = events.followEvents({ ...callerOf(request), signal: gone(reply) }, filter);
    const lines = (async function* () {
      for await (const entry of entries) yield Buffer.from(`${JSON.stringify(entry)}\n`);
    })();
    return reply.type('application/x-ndjson').header('cache-control', 'no-store').send(Readable.from(lines, { objectMode: false }));
  });
}
