import type { ErrorObject } from 'ajv';
import { toPublicError, isServerFault } from '../errors/public-error';
import { fieldOf, messageOf } from './request-validation';

// Turns anything a request can fail with into the status and JSON body the
// client gets: request-shape errors found by Fastify itself (bad JSON, wrong
// content type, body too large, schema violations), then Corral's typed
// errors through the one code mapping in errors/public-error.

export interface ErrorBody {
  error: string;
  message: string;
  field?: string;
  /** Only on a refused host delete (409): the workloads still live on the host. */
  affectedWorkloads?: string[];
}

export interface HttpError {
  status: number;
  body: ErrorBody;
  /** Worth logging with the underlying error: the fault is ours or a backend's. */
  serverFault: boolean;
}

interface FastifyLikeError {
  code?: string;
  statusCode?: number;
  validation?: ErrorObject[];
  validationContext?: string;
}

const clientError = (status: number, error: string, message: string, field?: string): HttpError => ({
  status,
  body: { error, message, ...(field ? { field } : {}) },
  serverFault: false,
});

// Fastify's own request errors, each with our wording.
const FRAMEWORK_ERRORS: Record<string, () => HttpError> = {
  FST_ERR_CTP_INVALID_JSON_BODY: () => clientError(400, 'invalid_argument', 'the request body is not valid JSON'),
  FST_ERR_CTP_EMPTY_JSON_BODY: () => clientError(400, 'invalid_argument', 'the request body is empty'),
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: () => clientError(400, 'invalid_argument', 'Content-Length does not match the body'),
  FST_ERR_CTP_BODY_TOO_LARGE: () => clientError(413, 'payload_too_large', 'the request body is too large'),
  FST_ERR_CTP_INVALID_MEDIA_TYPE: () => clientError(415, 'unsupported_media_type', 'the request body must be application/json'),
  FST_ERR_CTP_INVALID_TYPE: () => clientError(415, 'unsupported_media_type', 'the request body must be application/json'),
  FST_ERR_CTP_EMPTY_TYPE: () => clientError(415, 'unsupported_media_type', 'the request body must be application/json'),
  FST_ERR_BAD_URL: () => clientError(400, 'invalid_argument', 'the request URL is malformed'),
};

export function httpErrorFor(err: unknown): HttpError {
  const framework = (typeof err === 'object' && err !== null ? err : {}) as FastifyLikeError;
  if (Array.isArray(framework.validation) && framework.validation.length > 0) {
    const first = framework.validation[0];
    const field = fieldOf(first);
    return clientError(400, 'invalid_argument', messageOf(first, field, framework.validationContext ?? 'request'), field || undefined);
  }
  if (framework.code && FRAMEWORK_ERRORS[framework.code]) return FRAMEWORK_ERRORS[framework.code]();
  if (framework.code?.startsWith('FST_') && framework.statusCode && framework.statusCode >= 400 && framework.statusCode < 500) {
    // Any other request Fastify refused before our code ran.
    return clientError(framework.statusCode, 'invalid_argument', 'the request is malformed');
  }
  const pub = toPublicError(err);
  return {
    status: pub.httpStatus,
    body: {
      error: pub.code.toLowerCase(),
      message: pub.message,
      ...(pub.field ? { field: pub.field } : {}),
      ...(pub.affectedWorkloads ? { affectedWorkloads: pub.affectedWorkloads } : {}),
    },
    serverFault: isServerFault(pub.code),
  };
}
