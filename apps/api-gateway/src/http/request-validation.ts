import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';

// Request validation. Bodies are checked as sent: no type coercion and no
// silent removal of unknown properties (Fastify's defaults), so a client that
// sends `"command": "ls"` or a misspelt field hears about it. Path and query
// parameters arrive as strings and are coerced to the declared types.

function newAjv(coerce: boolean): Ajv {
  const ajv = new Ajv({ allErrors: false, coerceTypes: coerce, removeAdditional: false, useDefaults: true, strict: true });
  addFormats(ajv);
  return ajv;
}

const bodyAjv = newAjv(false);
const parameterAjv = newAjv(true);

export function compileRequestValidator({ schema, httpPart }: { schema: object; httpPart?: string }): ValidateFunction {
  return (httpPart === 'body' ? bodyAjv : parameterAjv).compile(schema);
}

function unescapePointer(segment: string): string {
  return segment.replace(/~1/g, '/').replace(/~0/g, '~');
}

function appendSegment(path: string, segment: string, isPropertyName = false): string {
  if (!isPropertyName && /^\d+$/.test(segment)) return `${path}[${segment}]`;
  return path === '' ? segment : `${path}.${segment}`;
}

/** The request field an ajv error is about, written like `command[0]` or `env.FOO`; '' for the whole part. */
export function fieldOf(error: ErrorObject): string {
  let path = error.instancePath
    .split('/')
    .slice(1)
    .map(unescapePointer)
    .reduce((at, segment) => appendSegment(at, segment), '');
  const params = error.params as Record<string, unknown>;
  // A rejected property *name* (propertyNames) is reported on the error
  // itself for the failing sub-rule, and in params for the rule as a whole.
  const named = error.propertyName ?? params['missingProperty'] ?? params['additionalProperty'] ?? params['propertyName'];
  if (typeof named === 'string') path = appendSegment(path, named, true);
  return path;
}

const plural = (n: unknown, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** A message for the client, built from the schema's rule rather than ajv's wording. */
export function messageOf(error: ErrorObject, field: string, part: string): string {
  const subject = field || `the ${part}`;
  const p = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'required':
      return `${subject} is required`;
    case 'additionalProperties':
      return `${subject} is not a known field`;
    case 'propertyNames':
      return `${subject}: the name is not allowed`;
    case 'pattern':
      return error.propertyName === undefined ? `${subject} has an invalid format` : `${subject}: the name is not allowed`;
    case 'type':
      return `${subject} must be ${p['type'] === 'integer' ? 'an integer' : `of type ${p['type']}`}`;
    case 'enum':
      return `${subject} must be one of ${(p['allowedValues'] as unknown[]).join(', ')}`;
    case 'minItems':
      return p['limit'] === 1 ? `${subject} must not be empty` : `${subject} must have at least ${plural(p['limit'], 'item')}`;
    case 'maxItems':
      return `${subject} must have at most ${plural(p['limit'], 'item')}`;
    case 'minLength':
      return p['limit'] === 1 ? `${subject} must not be empty` : `${subject} must have at least ${plural(p['limit'], 'character')}`;
    case 'maxLength':
      return `${subject} must have at most ${plural(p['limit'], 'character')}`;
    case 'maxProperties':
      return `${subject} must have at most ${plural(p['limit'], 'entry')}`.replace('entrys', 'entries');
    case 'minimum':
    case 'maximum':
      return `${subject} must be ${p['comparison']} ${p['limit']}`;
    case 'format':
      return `${subject} must be a valid ${p['format']}`;
    default:
      return `${subject} is invalid`;
  }
}
