import { Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { CorralError, errorFromCode, isCorralError, type CorralError as CorralErrorType, type ErrorCode } from '@corral/domain';

// The one mapping between Corral's typed errors and gRPC status codes. Both
// directions live here so a typed error survives a hop between services.

const toStatus: Record<ErrorCode, GrpcStatus> = {
  INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
  NOT_FOUND: GrpcStatus.NOT_FOUND,
  ALREADY_EXISTS: GrpcStatus.ALREADY_EXISTS,
  CONFLICT: GrpcStatus.ABORTED,
  FAILED_PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
  PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
  UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
  RESOURCE_EXHAUSTED: GrpcStatus.RESOURCE_EXHAUSTED,
  UNAVAILABLE: GrpcStatus.UNAVAILABLE,
  DEADLINE_EXCEEDED: GrpcStatus.DEADLINE_EXCEEDED,
  INTERNAL: GrpcStatus.INTERNAL,
};

const fromStatus = new Map<GrpcStatus, ErrorCode>([
  ...Object.entries(toStatus).map(([code, st]) => [st, code as ErrorCode] as const),
  [GrpcStatus.UNKNOWN, 'INTERNAL'],
  [GrpcStatus.CANCELLED, 'UNAVAILABLE'],
  [GrpcStatus.OUT_OF_RANGE, 'INVALID_ARGUMENT'],
  [GrpcStatus.UNIMPLEMENTED, 'FAILED_PRECONDITION'],
  [GrpcStatus.DATA_LOSS, 'INTERNAL'],
]);

export const ERROR_NAME_KEY = 'corral-error-name';
export const ERROR_FIELD_KEY = 'corral-error-field';

/** Text sent to callers for errors that are not Corral's own. */
export const INTERNAL_MESSAGE = 'internal error';

export interface GrpcErrorPayload {
  code: GrpcStatus;
  details: string;
  metadata: Metadata;
}

/**
 * A thrown value as a gRPC status. Typed errors keep their message (written
 * by Corral code for callers); anything else becomes INTERNAL with a fixed
 * message, so backend text (SQL, stack traces, paths) never leaves.
 */
export function toGrpcError(err: unknown): GrpcErrorPayload {
  const metadata = new Metadata();
  if (isCorralError(err)) {
    metadata.set(ERROR_NAME_KEY, err.name);
    if (err.field) metadata.set(ERROR_FIELD_KEY, err.field);
    return { code: toStatus[err.code], details: err.message, metadata };
  }
  return { code: GrpcStatus.INTERNAL, details: INTERNAL_MESSAGE, metadata };
}

const TRANSPORT_MESSAGES: Partial<Record<ErrorCode, string>> = {
  UNAVAILABLE: 'service unavailable',
  DEADLINE_EXCEEDED: 'deadline exceeded',
};

/**
 * A client-side gRPC failure as a typed Corral error, with the original as
 * cause. Only errors a Corral server raised (they carry the error name in
 * metadata) keep their message; anything else — connection failures,
 * deadlines, other servers — gets a fixed text, because grpc-js puts
 * addresses and transport details into its messages.
 */
export function fromGrpcError(err: ServiceError): CorralErrorType {
  const code = fromStatus.get(err.code) ?? 'INTERNAL';
  const fromCorral = (err.metadata?.get(ERROR_NAME_KEY).length ?? 0) > 0;
  const field = fromCorral ? err.metadata.get(ERROR_FIELD_KEY)[0]?.toString() : undefined;
  const message = fromCorral && err.details ? err.details : (TRANSPORT_MESSAGES[code] ?? INTERNAL_MESSAGE);
  return errorFromCode(code, message, { cause: err, field });
}

export function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as ServiceError).code === 'number' && 'metadata' in err;
}

export { CorralError };
