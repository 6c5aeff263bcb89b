import { RESOURCE_ID } from '../operations/corral-operations';
import { EXEC_LIMITS, FILE_PATH_MAX_LENGTH, SNAPSHOT_ID } from '../operations/workload-streams';
import { authenticatedErrors, errorResponses, idParams, SCHEMA_IDS } from './schemas';

// Schemas (and OpenAPI text) of exec, files and snapshots.

export const EXEC_CHANNELS = { stdin: 0, stdout: 1, stderr: 2, resize: 3, exit: 4, stdinEof: 5, error: 6 } as const;

export const EXEC_FRAMING = [
  'A WebSocket (send `Authorization: Bearer <key>` with the upgrade request). Every message is a **binary** frame whose first byte names its channel:',
  '',
  '| byte | direction | payload |',
  '|---|---|---|',
  '| 0 | client → server | stdin bytes |',
  '| 1 | server → client | stdout bytes |',
  '| 2 | server → client | stderr bytes (never with `tty=true`: merged into stdout) |',
  '| 3 | client → server | resize: JSON `{"columns":N,"rows":N}` |',
  '| 4 | server → client | exit: JSON `{"exitCode":N}`; the server then closes with 1000 |',
  '| 5 | client → server | end of stdin (no payload) |',
  '| 6 | server → client | error: JSON `{"error":"not_found","message":"..."}`; the server then closes with 1011 |',
  '',
  'Text frames are refused (close 1003). Closing the socket ends the command. Errors found before the upgrade (unknown workload, not running, a driver that cannot exec) are ordinary HTTP error answers. Drivers without streaming exec run the command once stdin has ended (send byte 5) and refuse `tty`. A plain GET without an upgrade gets 426.',
].join('\n');

const pathQuery = { type: 'string', minLength: 1, maxLength: FILE_PATH_MAX_LENGTH, pattern: '^/', description: 'absolute path inside the workload; no `..`' };

/** `/v1/workloads/{id}/snapshots/{snapshotId}`. */
const snapshotParams = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'snapshotId'],
  properties: {
    id: { type: 'string', minLength: 1, maxLength: RESOURCE_ID.maxLength, pattern: RESOURCE_ID.pattern },
    snapshotId: { type: 'string', maxLength: SNAPSHOT_ID.maxLength, pattern: SNAPSHOT_ID.pattern },
  },
} as const;

export const workloadStreamSchemas = {
  execWorkload: {
    tags: ['workloads'],
    summary: 'Run a command in a running workload (WebSocket)',
    description: EXEC_FRAMING,
    params: idParams,
    querystring: {
      type: 'object',
      additionalProperties: false,
      required: ['command'],
      properties: {
        command: {
          type: 'array',
          minItems: 1,
          maxItems: EXEC_LIMITS.maxArgs,
          items: { type: 'string', maxLength: EXEC_LIMITS.maxArgBytes },
          description: 'the program and its arguments, one `command=` per argument, in order',
        },
        tty: { type: 'boolean', description: 'allocate a terminal in the workload' },
        env: { type: 'array', items: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*=' }, description: '`NAME=value`, repeatable: extra environment' },
        workingDir: { ...pathQuery, description: 'working directory inside the workload' },
        columns: { type: 'integer', minimum: 0, maximum: EXEC_LIMITS.maxTerminal },
        rows: { type: 'integer', minimum: 0, maximum: EXEC_LIMITS.maxTerminal },
      },
    },
    response: {
      101: { description: 'switched to the WebSocket protocol described above' },
      426: { description: 'upgrade_required: connect with a WebSocket client' },
      ...authenticatedErrors,
      ...errorResponses(404, 409),
    },
  },
  putWorkloadFile: {
    tags: ['workloads'],
    summary: 'Write a file in a running workload',
    description:
      'The request body (any content type; it is streamed, not parsed) becomes the file, atomically: readers see the old content or the new. Larger than the limit: 413, and the file is left as it was. The parent directory must exist.',
    params: idParams,
    querystring: {
      type: 'object',
      additionalProperties: false,
      required: ['path'],
      properties: { path: pathQuery, mode: { type: 'string', pattern: '^0?[0-7]{1,4}$', description: 'permission bits in octal, e.g. 0644 (default)' } },
    },
    response: {
      200: { type: 'object', required: ['path', 'bytes'], properties: { path: { type: 'string' }, bytes: { type: 'integer' } } },
      ...authenticatedErrors,
      ...errorResponses(404, 409, 413),
    },
  },
  getWorkloadFile: {
    tags: ['workloads'],
    summary: 'Read a file, or list a directory, of a running workload',
    description:
      'Without `list`: the file, streamed as `application/octet-stream` (a directory is a 400). With `list=true`: the directory\'s entries as JSON (a file is a 400). Symlinks resolve inside the workload; a path that leads outside is a 400.',
    params: idParams,
    querystring: {
      type: 'object',
      additionalProperties: false,
      required: ['path'],
      properties: { path: pathQuery, list: { type: 'boolean', description: 'list the directory at `path` instead of reading a file' } },
    },
    response: {
      200: {
        description: 'the file (octet-stream), or with list=true the listing (JSON)',
        content: {
          'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
          'application/json': {
            schema: {
              type: 'object',
              required: ['path', 'entries'],
              properties: {
                path: { type: 'string' },
                entries: {
                  type: 'array',
                  items: {
                    type: 'object',
                    required: ['name', 'kind', 'sizeBytes', 'mode', 'modifiedAt'],
                    properties: {
                      name: { type: 'string' },
                      kind: { type: 'string', enum: ['file', 'directory', 'symlink', 'other'] },
                      sizeBytes: { type: 'integer' },
                      mode: { type: 'integer', description: 'permission bits, e.g. 420 for 0644' },
                      modifiedAt: { type: ['string', 'null'], format: 'date-time' },
                    },
                  },
                },
              },
            },
          },
        },
      },
      ...authenticatedErrors,
      ...errorResponses(404, 409),
    },
  },
  restoreWorkload: {
    tags: ['workloads'],
    summary: 'Start a new workload from a snapshot',
    description:
      'A new workload with the source\'s spec, on the host that holds the snapshot, started from the snapshot\'s memory and device state (it resumes where the source was, rather than booting). 404 for an unknown snapshot; 409 when the driver cannot restore.',
    params: snapshotParams,
    body: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: { name: { type: 'string', maxLength: 63, pattern: '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$', description: 'default: "<source name>-restored"' } },
    },
    response: { 201: { $ref: `${SCHEMA_IDS.workload}#` }, ...authenticatedErrors, ...errorResponses(404, 409) },
  },
  listWorkloadSnapshots: {
    tags: ['workloads'],
    summary: "List a workload's memory snapshots",
    description:
      "The snapshots held on the workload's host, oldest first, including those of a stopped workload (they go with its teardown). `sizeBytes` is the host storage they take (allocated blocks, not apparent length).",
    params: idParams,
    response: {
      200: {
        type: 'object',
        required: ['snapshots'],
        properties: {
          snapshots: {
            type: 'array',
            items: {
              type: 'object',
              required: ['id', 'sourceWorkloadId', 'createdAt', 'sizeBytes', 'driver'],
              properties: {
                id: { type: 'string', description: 'snapshot id, as POST …/snapshots returned it' },
                sourceWorkloadId: { type: 'string', description: 'the workload it was taken of' },
                createdAt: { type: ['string', 'null'], format: 'date-time' },
                sizeBytes: { type: 'integer', description: 'host storage it takes (allocated blocks)' },
                driver: { type: 'string', description: 'the driver that took it (empty for snapshots older than this field)' },
              },
            },
          },
        },
      },
      ...authenticatedErrors,
      ...errorResponses(404),
    },
  },
  deleteWorkloadSnapshot: {
    tags: ['workloads'],
    summary: 'Delete a memory snapshot',
    description: 'Removes the snapshot from its host. Idempotent: deleting a snapshot that is not there answers 204 as well. 409 while the snapshot is being taken or a restore from it is under way.',
    params: snapshotParams,
    response: { 204: { description: 'deleted (or already absent)', type: 'null' }, ...authenticatedErrors, ...errorResponses(404, 409) },
  },
  snapshotWorkload: {
    tags: ['workloads'],
    summary: 'Take a memory snapshot of a running workload',
    description:
      'Streams newline-delimited JSON (`application/x-ndjson`): `{"type":"progress","status":"active","transferredBytes":N,"totalBytes":N,"remainingBytes":N,"elapsedMs":N}` lines while it runs, then `{"type":"result","snapshotId":"...","bytes":N,"durationMs":N}`. A failure after the first line is a last line `{"type":"error","error":"...","message":"..."}`. 409 when the workload is not running or its driver cannot snapshot (only qemu can).',
    params: idParams,
    body: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: { leavePaused: { type: 'boolean', description: 'leave the workload paused afterwards (default: as it was)' } },
    },
    response: {
      200: { description: 'progress lines, then the result line', content: { 'application/x-ndjson': { schema: { type: 'string' } } } },
      ...authenticatedErrors,
      ...errorResponses(404, 409),
    },
  },
} as const;
