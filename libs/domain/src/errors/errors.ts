// One error vocabulary for all of Corral. Domain code throws these; the grpc
// lib maps `code` to a gRPC status and the gateway maps that to HTTP with a
// fixed client message. `name` is stable so callers can branch on it across
// process boundaries; `cause` keeps the underlying error for logs.

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'CONFLICT'
  | 'FAILED_PRECONDITION'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'DEADLINE_EXCEEDED'
  | 'INTERNAL';

export interface CorralErrorOptions {
  cause?: unknown;
  /** Field path the error is about, e.g. `command[0]` or `env.PATH`. */
  field?: string;
}

export abstract class CorralError extends Error {
  abstract readonly code: ErrorCode;
  readonly field?: string;

  constructor(message: string, options: CorralErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.field = options.field;
  }
}

export class InvalidArgumentError extends CorralError {
  override readonly name = 'InvalidArgumentError';
  readonly code = 'INVALID_ARGUMENT';
}
export class NotFoundError extends CorralError {
  override readonly name = 'NotFoundError';
  readonly code = 'NOT_FOUND';
}
export class AlreadyExistsError extends CorralError {
  override readonly name = 'AlreadyExistsError';
  readonly code = 'ALREADY_EXISTS';
}
export class ConflictError extends CorralError {
  override readonly name = 'ConflictError';
  readonly code = 'CONFLICT';
}
export class FailedPreconditionError extends CorralError {
  override readonly name = 'FailedPreconditionError';
  readonly code = 'FAILED_PRECONDITION';
}
export class PermissionDeniedError extends CorralError {
  override readonly name = 'PermissionDeniedError';
  readonly code = 'PERMISSION_DENIED';
}
export class UnauthenticatedError extends CorralError {
  override readonly name = 'UnauthenticatedError';
  readonly code = 'UNAUTHENTICATED';
}
export class ResourceExhaustedError extends CorralError {
  override readonly name = 'ResourceExhaustedError';
  readonly code = 'RESOURCE_EXHAUSTED';
}
export class UnavailableError extends CorralError {
  override readonly name = 'UnavailableError';
  readonly code = 'UNAVAILABLE';
}
export class DeadlineExceededError extends CorralError {
  override readonly name = 'DeadlineExceededError';
  readonly code = 'DEADLINE_EXCEEDED';
}
export class InternalError extends CorralError {
  override readonly name = 'InternalError';
  readonly code = 'INTERNAL';
}

const byCode: Record<ErrorCode, new (message: string, options?: CorralErrorOptions) => CorralError> = {
  INVALID_ARGUMENT: InvalidArgumentError,
  NOT_FOUND: NotFoundError,
  ALREADY_EXISTS: AlreadyExistsError,
  CONFLICT: ConflictError,
  FAILED_PRECONDITION: FailedPreconditionError,
  PERMISSION_DENIED: PermissionDeniedError,
  UNAUTHENTICATED: UnauthenticatedError,
  RESOURCE_EXHAUSTED: ResourceExhaustedError,
  UNAVAILABLE: UnavailableError,
  DEADLINE_EXCEEDED: DeadlineExceededError,
  INTERNAL: InternalError,
};

/** Rebuilds a typed error from its code, e.g. after it crossed a gRPC hop. */
export function errorFromCode(code: ErrorCode, message: string, options?: CorralErrorOptions): CorralError {
  return new byCode[code](message, options);
}

export function isCorralError(err: unknown): err is CorralError {
  return err instanceof CorralError;
}
