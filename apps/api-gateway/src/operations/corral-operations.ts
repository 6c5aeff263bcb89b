import {
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  UnauthenticatedError,
  validateWorkloadSpec,
  workloadExtrasToWire,
  type WorkloadSpecInput,
} from '@corral/domain';
import type { hostRegistryV1, schedulerV1 } from '@corral/proto';
import { teamScopeOf, type Caller } from './caller';
import type { CorralPorts } from './ports';
import { createFleetOperations, type FleetOperations } from './fleet-operations';
import { createWorkloadStreamOperations, type WorkloadStreamOperations } from './workload-streams';

// The operations of Corral's public API, shared by the REST and the gRPC
// adapters so both authenticate, validate and scope by team the same way.
// Inputs arrive already shaped (JSON Schema or protobuf); the rules that
// matter are checked again here because a gRPC caller skips JSON Schema.

export interface OperationContext {
  caller: Caller;
  /** Aborted when the client goes away; passed on to backend calls. */
  signal?: AbortSignal;
}

export const REGISTRATION_TOKEN_TTL = { minSeconds: 60, maxSeconds: 7 * 24 * 3600, defaultSeconds: 3600 } as const;
export const REGISTRATION_TOKEN_DESCRIPTION_MAX_LENGTH = 256;
export const LOG_TAIL = { defaultBytes: 64 * 1024, maxBytes: 1024 * 1024 } as const;
export const RESOURCE_ID = { pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$', maxLength: 128 } as const;
const resourceId = new RegExp(RESOURCE_ID.pattern);
/** Deadline of a purge: the scheduler's forced stop (default grace 10 s) and teardown (it allows its agent 40 s). */
const PURGE_DEADLINE_MS = 60_000;

export interface RegistrationTokenInput {
  /** 0 or absent: the default. */
  ttlSeconds?: number;
  description?: string;
  /** Which hosts may register with it; absent or empty: any host. host-registry validates it (fields `scope.*`). */
  scope?: { namePattern?: string; labels?: Record<string, string> };
}

export interface WorkloadLogs {
  data: Buffer;
  truncated: boolean;
}

export interface CorralOperations extends WorkloadStreamOperations, FleetOperations {
  /** Resolves an `Authorization` header value ("Bearer <key>") to its caller. */
  authenticate(authorization: string | undefined): Promise<Caller>;
  whoAmI(ctx: OperationContext): Promise<{ keyId: string; admin: boolean; teamId: string | null }>;
  createRegistrationToken(ctx: OperationContext, input: RegistrationTokenInput): Promise<{ id: string; token: string; expiresAt: Date }>;
  listHosts(ctx: OperationContext): Promise<hostRegistryV1.Host[]>;
  getHost(ctx: OperationContext, id: string): Promise<hostRegistryV1.Host>;
  createWorkload(ctx: OperationContext, spec: WorkloadSpecInput): Promise<schedulerV1.Workload>;
  getWorkload(ctx: OperationContext, id: string): Promise<schedulerV1.Workload>;
  listWorkloads(ctx: OperationContext): Promise<schedulerV1.Workload[]>;
  /**
   * Stops the workload; idempotent, so deleting a stopped workload returns it
   * unchanged. With `purge` it is also torn down on its host (stopped first
   * if it still runs) and comes back `retired`; idempotent too.
   */
  deleteWorkload(ctx: OperationContext, id: string, options?: { purge?: boolean }): Promise<schedulerV1.Workload>;
  getWorkloadLogs(ctx: OperationContext, id: string, tailBytes?: number): Promise<WorkloadLogs>;
  /**
   * The workload's output as a stream: the tail, then with `follow` new
   * output until the workload ends. Resolves once the workload is known to
   * be visible (so a 404 comes before any output); ending the iteration or
   * aborting `ctx.signal` cancels the backend stream.
   */
  streamWorkloadLogs(ctx: OperationContext, id: string, options: { tailBytes?: number; follow: boolean }): Promise<AsyncIterable<Buffer>>;
  /** Freezes a running workload; idempotent, so pausing a paused workload returns it unchanged. */
  pauseWorkload(ctx: OperationContext, id: string): Promise<schedulerV1.Workload>;
  /** Thaws a paused workload; idempotent like pause. */
  resumeWorkload(ctx: OperationContext, id: string): Promise<schedulerV1.Workload>;
}

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

export function bearerKeyOf(authorization: string | undefined): string {
  const match = authorization === undefined ? null : BEARER.exec(authorization);
  if (!match) throw new UnauthenticatedError('missing or malformed Authorization header: expected "Bearer <api key>"');
  return match[1];
}

function checkId(id: string): string {
  if (typeof id !== 'string' || id.length === 0 || id.length > RESOURCE_ID.maxLength || !resourceId.test(id)) {
    throw new InvalidArgumentError('id is malformed', { field: 'id' });
  }
  return id;
}

function present<T>(value: T | undefined, what: string): T {
  // A backend that answers without the resource broke its contract: that is
  // our fault, not the caller's.
  if (value === undefined) throw new InternalError(`backend answered without ${what}`);
  return value;
}

export function createCorralOperations(ports: CorralPorts): CorralOperations {
  const { scheduler, hostRegistry } = ports;
  const opts = (ctx: OperationContext) => (ctx.signal ? { signal: ctx.signal } : {});

  return {
    ...createWorkloadStreamOperations(ports, checkId),
    ...createFleetOperations(ports, checkId),

    async authenticate(authorization) {
      return ports.authenticate(bearerKeyOf(authorization));
    },

    async whoAmI({ caller }) {
      return { keyId: caller.keyId, admin: caller.admin, teamId: caller.teamId };
    },

    async createRegistrationToken(ctx, input) {
      // Admin keys make platform tokens; a team key makes tokens whose hosts
      // join its own team (BYOC).
      const teamId = teamScopeOf(ctx.caller);
      const ttlSeconds = input.ttlSeconds || REGISTRATION_TOKEN_TTL.defaultSeconds;
      if (!Number.isInteger(ttlSeconds) || ttlSeconds < REGISTRATION_TOKEN_TTL.minSeconds || ttlSeconds > REGISTRATION_TOKEN_TTL.maxSeconds) {
        throw new InvalidArgumentError(
          `ttlSeconds must be between ${REGISTRATION_TOKEN_TTL.minSeconds} and ${REGISTRATION_TOKEN_TTL.maxSeconds}`,
          { field: 'ttlSeconds' },
        );
      }
      const description = input.description ?? '';
      if (description.length > REGISTRATION_TOKEN_DESCRIPTION_MAX_LENGTH) {
        throw new InvalidArgumentError(`description may have at most ${REGISTRATION_TOKEN_DESCRIPTION_MAX_LENGTH} characters`, { field: 'description' });
      }
      // host-registry checks the scope and names the field it refuses (`scope.namePattern`, `scope.labels.<key>`).
      const scope = input.scope ? { namePattern: input.scope.namePattern ?? '', labels: { ...(input.scope.labels ?? {}) } } : undefined;
      const res = await hostRegistry.createRegistrationToken({ ttlSeconds, teamId, description, scope }, opts(ctx));
      return { id: res.id, token: res.token, expiresAt: present(res.expiresAt, 'an expiry') };
    },

    async listHosts(ctx) {
      const res = await hostRegistry.listHosts({ teamId: teamScopeOf(ctx.caller) }, opts(ctx));
      return res.hosts;
    },

    async getHost(ctx, id) {
      const teamId = teamScopeOf(ctx.caller);
      const res = await hostRegistry.getHost({ id: checkId(id) }, opts(ctx));
      const host = present(res.host, 'a host');
      // The registry's GetHost is unscoped: a team sees platform hosts and its
      // own, and another team's host is reported exactly like a missing one.
      if (teamId !== '' && host.teamId !== '' && host.teamId !== teamId) throw new NotFoundError(`host ${id} not found`);
      return host;
    },

    async createWorkload(ctx, spec) {
      const teamId = teamScopeOf(ctx.caller);
      const valid = validateWorkloadSpec({
        name: spec.name,
        driver: spec.driver,
        command: spec.command,
        env: spec.env ?? {},
        image: spec.image,
        resources: spec.resources,
        routes: spec.routes,
        vm: spec.vm,
      });
      const res = await scheduler.createWorkload(
        { teamId, name: valid.name, driver: valid.driver, command: valid.command, env: valid.env, ...workloadExtrasToWire(valid) },
        opts(ctx),
      );
      return present(res.workload, 'a workload');
    },

    async getWorkload(ctx, id) {
      const res = await scheduler.getWorkload({ id: checkId(id), teamId: teamScopeOf(ctx.caller) }, opts(ctx));
      return present(res.workload, 'a workload');
    },

    async listWorkloads(ctx) {
      const res = await scheduler.listWorkloads({ teamId: teamScopeOf(ctx.caller), hostId: '', excludeTerminal: false }, opts(ctx));
      return res.workloads;
    },

    async deleteWorkload(ctx, id, options = {}) {
      if (options.purge) {
        const res = await scheduler.destroyWorkload({ id: checkId(id), teamId: teamScopeOf(ctx.caller), force: true, timeoutSeconds: 0 }, { ...opts(ctx), deadlineMs: PURGE_DEADLINE_MS });
        return present(res.workload, 'a workload');
      }
      // A stop waits out the workload's grace period (scheduler default 10 s) and the kill after it: more than the backend deadline.
      const res = await scheduler.stopWorkload({ id: checkId(id), teamId: teamScopeOf(ctx.caller), timeoutSeconds: 0 }, { ...opts(ctx), deadlineMs: PURGE_DEADLINE_MS });
      return present(res.workload, 'a workload');
    },

    async pauseWorkload(ctx, id) {
      const res = await scheduler.pauseWorkload({ id: checkId(id), teamId: teamScopeOf(ctx.caller) }, opts(ctx));
      return present(res.workload, 'a workload');
    },

    async resumeWorkload(ctx, id) {
      const res = await scheduler.resumeWorkload({ id: checkId(id), teamId: teamScopeOf(ctx.caller) }, opts(ctx));
      return present(res.workload, 'a workload');
    },

    async getWorkloadLogs(ctx, id, tailBytes) {
      const tail = tailBytes || LOG_TAIL.defaultBytes;
      if (!Number.isInteger(tail) || tail < 1 || tail > LOG_TAIL.maxBytes) {
        throw new InvalidArgumentError(`tail must be between 1 and ${LOG_TAIL.maxBytes} bytes`, { field: 'tail' });
      }
      const res = await scheduler.getWorkloadLogs({ id: checkId(id), teamId: teamScopeOf(ctx.caller), tailBytes: tail }, opts(ctx));
      return { data: Buffer.from(res.data), truncated: res.truncated };
    },

    async streamWorkloadLogs(ctx, id, { tailBytes, follow }) {
      const tail = tailBytes || LOG_TAIL.defaultBytes;
      if (!Number.isInteger(tail) || tail < 1 || tail > LOG_TAIL.maxBytes) {
        throw new InvalidArgumentError(`tail must be between 1 and ${LOG_TAIL.maxBytes} bytes`, { field: 'tail' });
      }
      const request = { id: checkId(id), teamId: teamScopeOf(ctx.caller), tailBytes: tail, follow };
      // Visible to this caller (or a NotFound) before the stream starts.
      await scheduler.getWorkload({ id: request.id, teamId: request.teamId }, opts(ctx));
      return (async function* () {
        for await (const chunk of scheduler.stream('streamWorkloadLogs', request, opts(ctx))) yield Buffer.from(chunk.data);
      })();
    },
  };
}
