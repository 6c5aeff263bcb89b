import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isCorralError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { OperationContext } from '../operations/corral-operations';
import { IMAGE_FORMATS, IMAGE_REF_PATTERN, PULL_REF_PATTERN, type ImageOperations, type PullImageInput } from '../operations/image-operations';
import { responseGone, sendNdjson } from './ndjson-responses';
import { authenticatedErrors, errorResponses, idParams } from './schemas';

// REST routes of a host's images: the archive is the streamed request body,
// answered with NDJSON progress lines and the result (like snapshots); a
// pull from a registry answers the same way. The import is an upload
// route (`config.longRequest`): the gateway gives its body the upload
// timeout, not the ordinary one (see request-timeouts.ts).

export interface ImageRouteOptions {
  images: ImageOperations;
  logger: Logger;
  imageMaxBytes: number;
  callerOf(request: FastifyRequest): OperationContext;
}

const imageSchemas = {
  importHostImage: {
    tags: ['hosts'],
    summary: "Import an image archive into a host's podman image store",
    description:
      'The request body is the archive (`application/octet-stream`, streamed, not parsed): a rootfs tarball (`format=rootfs-tar`, the default; `podman import`) or an OCI / docker archive (`oci-archive`, `docker-archive`; `podman load`), named `ref` on the host. Answers newline-delimited JSON (`application/x-ndjson`): `{"type":"progress","phase":"receiving|importing|storing","receivedBytes":N,"consumedBytes":N,"totalBytes":N}` lines (consumedBytes: what podman has read, 0 where it cannot be told), then `{"type":"result","imageId":"...","ref":"...","bytes":N}`. A failure after the first line is a last line `{"type":"error","error":"...","message":"..."}`. Larger than the limit: 413 (or, once lines have been sent, an error line). Admins may import into any host, a team only into its own hosts.',
    params: idParams,
    querystring: {
      type: 'object',
      additionalProperties: false,
      required: ['ref'],
      properties: {
        ref: { type: 'string', maxLength: 255, pattern: IMAGE_REF_PATTERN, description: 'the image reference on the host, e.g. localhost/app:1' },
        format: { type: 'string', enum: [...IMAGE_FORMATS], description: 'archive format (default rootfs-tar)' },
      },
    },
    response: {
      200: { description: 'progress lines, then the result line', content: { 'application/x-ndjson': { schema: { type: 'string' } } } },
      ...authenticatedErrors,
      ...errorResponses(404, 409, 413),
    },
  },
  pullHostImage: {
    tags: ['hosts'],
    summary: "Pull an image from a registry into a host's podman image store",
    description:
      'The host\'s podman pulls `ref` (a name without a registry means docker.io, without a tag `latest`; `@sha256:` digests allowed) from its registry, optionally logging in with `credentials` (used for this pull only: written to a private file on the host and deleted afterwards, never stored, logged or returned). The host\'s operator decides which registries are allowed and which are reached without TLS verification. Answers newline-delimited JSON (`application/x-ndjson`): `{"type":"progress","phase":"resolving|retrying|copying-blob|copying-config|writing-manifest|storing-signatures","ref":"...","digest":"sha256:...","blobs":N,"alreadyPresent":true}` lines (digest for the copying phases; blobs: layers started so far), then `{"type":"result","imageId":"...","ref":"...","digest":"sha256:..."}` (ref fully qualified, digest of the manifest). A failure after the first line is a last line `{"type":"error","error":"...","message":"..."}`: `not_found` when the registry has no such image, `permission_denied` when it refuses the login, `unavailable` when it cannot be reached. Admins may pull into any host, a team only into its own hosts.',
    params: idParams,
    body: {
      type: 'object',
      additionalProperties: false,
      required: ['ref'],
      properties: {
        ref: { type: 'string', maxLength: 512, pattern: PULL_REF_PATTERN, description: 'e.g. docker.io/library/busybox:1.36 or 127.0.0.1:5000/team/app@sha256:…' },
        credentials: {
          type: 'object',
          additionalProperties: false,
          required: ['username', 'password'],
          description: 'registry login for this pull only',
          properties: {
            username: { type: 'string', minLength: 1, maxLength: 256, pattern: '^[^:\\s]+$' },
            password: { type: 'string', minLength: 1, maxLength: 4096, writeOnly: true },
          },
        },
      },
    },
    response: {
      200: { description: 'progress lines, then the result line', content: { 'application/x-ndjson': { schema: { type: 'string' } } } },
      ...authenticatedErrors,
      ...errorResponses(404, 409),
    },
  },
  listHostImages: {
    tags: ['hosts'],
    summary: "List a host's podman images",
    params: idParams,
    response: {
      200: {
        type: 'object',
        required: ['images'],
        properties: {
          images: {
            type: 'array',
            items: {
              type: 'object',
              required: ['imageId', 'refs', 'sizeBytes'],
              properties: {
                imageId: { type: 'string' },
                refs: { type: 'array', items: { type: 'string' } },
                sizeBytes: { type: 'integer' },
                createdAt: { type: 'string', format: 'date-time' },
              },
            },
          },
        },
      },
      ...authenticatedErrors,
      ...errorResponses(404),
    },
  },
} as const;

/** What a too-large upload is answered with: the framework's own 413 entry in the one error switch. */
function payloadTooLarge(): Error {
  return Object.assign(new Error('payload too large'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 });
}

export async function registerImageRoutes(api: FastifyInstance, options: ImageRouteOptions): Promise<void> {
  const { images, logger, callerOf } = options;

  await api.register(async (uploads) => {
    // The body is the archive: streamed through as it arrives, whatever its type.
    uploads.removeAllContentTypeParsers();
    uploads.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

    uploads.post<{ Params: { id: string }; Querystring: { ref: string; format?: string } }>(
      '/v1/hosts/:id/images',
      {
        schema: imageSchemas.importHostImage,
        bodyLimit: Number.MAX_SAFE_INTEGER,
        // An archive of gigabytes takes longer to arrive than any ordinary request may.
        config: { longRequest: 'upload' },
        preValidation: async (request) => {
          const length = Number(request.headers['content-length']);
          if (Number.isFinite(length) && length > options.imageMaxBytes) throw payloadTooLarge();
        },
      },
      async (request, reply) => {
        const body = (request.body ?? request.raw) as AsyncIterable<Buffer>;
        const length = Number(request.headers['content-length']);
        let events;
        try {
          events = await images.importHostImage(
            { ...callerOf(request), signal: responseGone(reply) },
            request.params.id,
            { ref: request.query.ref, format: request.query.format, maxBytes: options.imageMaxBytes, ...(Number.isFinite(length) ? { sizeBytes: length } : {}) },
            body,
          );
        } catch (err) {
          if (isCorralError(err) && err.code === 'RESOURCE_EXHAUSTED') throw payloadTooLarge();
          throw err;
        }
        return sendNdjson(reply, events, (err) => logger.error('image import failed', { reqId: request.id, err }));
      },
    );
  });

  api.post<{ Params: { id: string }; Body: PullImageInput }>('/v1/hosts/:id/images/pull', { schema: imageSchemas.pullHostImage }, async (request, reply) => {
    const events = await images.pullHostImage({ ...callerOf(request), signal: responseGone(reply) }, request.params.id, request.body);
    return sendNdjson(reply, events, (err) => logger.error('image pull failed', { reqId: request.id, err }));
  });

  api.get<{ Params: { id: string } }>('/v1/hosts/:id/images', { schema: imageSchemas.listHostImages }, async (request) => ({
    images: await images.listHostImages(callerOf(request), request.params.id),
  }));
}
