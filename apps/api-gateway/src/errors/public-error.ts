import { isCorralError, type ErrorCode } from '@corral/domain';
import { HostInUseError } from './host-in-use';

// What a client of the gateway (REST or gRPC) is told about a failure. Every
// code has a fixed message, because the error may have come from a backend
// service whose text (SQL, addresses, stack traces) must not leave the
// control plane. Only INVALID_ARGUMENT keeps its message and field: those are
// written by Corral's validation for the caller, to say what to fix.

export interface ClientFacing {
  httpStatus: number;
  message: string;
}

/** The one mapping from Corral's error codes to what clients see. */
export function clientFacing(code: ErrorCode): ClientFacing {
  switch (code) {
    case 'INVALID_ARGUMENT':
      return { httpStatus: 400, message: 'invalid argument' };
    case 'UNAUTHENTICATED':
      return { httpStatus: 401, message: 'authentication required' };
    case 'PERMISSION_DENIED':
      return { httpStatus: 403, message: 'permission denied' };
    case 'NOT_FOUND':
      return { httpStatus: 404, message: 'resource not found' };
    case 'ALREADY_EXISTS':
      return { httpStatus: 409, message: 'resource already exists' };
    case 'CONFLICT':
      return { httpStatus: 409, message: 'the request conflicts with the current state of the resource' };
    // 409 rather than 400: the request itself was fine, the resource's state
    // is what stops it, and retrying after that state changes can succeed.
    case 'FAILED_PRECONDITION':
      return { httpStatus: 409, message: 'the resource is not in a state that allows this operation' };
    case 'RESOURCE_EXHAUSTED':
      return { httpStatus: 429, message: 'resource exhausted, try again later' };
    case 'UNAVAILABLE':
      return { httpStatus: 503, message: 'service unavailable' };
    case 'DEADLINE_EXCEEDED':
      return { httpStatus: 504, message: 'the operation timed out' };
    case 'INTERNAL':
      return { httpStatus: 500, message: 'internal error' };
  }
}

/** The field the scheduler sets on a nothing-fits FailedPrecondition (apps/scheduler/src/placement). */
export const NO_FIT_FIELD = 'placement';

/** The field the gRPC Idempotency-Key refusals name (operations/idempotent-calls.ts); their text is the gateway's own. */
export const IDEMPOTENCY_KEY_FIELD = 'idempotency-key';

/** The field the scheduler sets on a FailedPrecondition about a service deploy (apps/scheduler/src/services). */
export const SERVICE_STATE_FIELD = 'service';

export interface PublicError {
  code: ErrorCode;
  httpStatus: number;
  message: string;
  field?: string;
  /** A refused host delete: the workloads still live there. */
  affectedWorkloads?: string[];
}

/** Any thrown value as what a client may see. Anything not a Corral error is INTERNAL. */
export function toPublicError(err: unknown): PublicError {
  const code: ErrorCode = isCorralError(err) ? err.code : 'INTERNAL';
  const facing = clientFacing(code);
  if (code === 'INVALID_ARGUMENT' && isCorralError(err)) {
    return { code, httpStatus: facing.httpStatus, message: err.message || facing.message, ...(err.field ? { field: err.field } : {}) };
  }
  if (code === 'FAILED_PRECONDITION' && isCorralError(err) && err.field === NO_FIT_FIELD && err.message) {
    // The scheduler's placement explanation ("no host has 4096 MB free; best
    // candidate h-3 has 2048"): written by Corral from host names and sizes
    // the caller may see, and the one thing that tells them what to change.
    return { code, httpStatus: facing.httpStatus, message: err.message, field: NO_FIT_FIELD };
  }
  if (code === 'FAILED_PRECONDITION' && isCorralError(err) && err.field === SERVICE_STATE_FIELD && err.message) {
    // The scheduler's own words about the caller's service (a rollout in
    // progress, a secret it cannot resolve yet): names and ids only.
    return { code, httpStatus: facing.httpStatus, message: err.message, field: SERVICE_STATE_FIELD };
  }
  if (code === 'CONFLICT' && isCorralError(err) && err.field === IDEMPOTENCY_KEY_FIELD && err.message) {
    // A key still in flight (ABORTED over gRPC): our own fixed text naming the key, so the caller knows to retry.
    return { code, httpStatus: facing.httpStatus, message: err.message, field: IDEMPOTENCY_KEY_FIELD };
  }
  if (err instanceof HostInUseError) {
    // Our own text, built from ids only, so it may reach the client.
    return { code, httpStatus: facing.httpStatus, message: err.message, affectedWorkloads: [...err.affectedWorkloadIds] };
  }
  return { code, ...facing };
}

/** Whether a failure is the control plane's fault rather than the caller's: worth logging in full. */
export function isServerFault(code: ErrorCode): boolean {
  return code === 'INTERNAL' || code === 'UNAVAILABLE' || code === 'DEADLINE_EXCEEDED';
}
