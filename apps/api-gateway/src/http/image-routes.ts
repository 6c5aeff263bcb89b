import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isCorralError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { OperationContext } from '../operations/corral-operations';
import { IMAGE_FORMATS, IMAGE_REF_PATTERN, type ImageOperations } from '../operations/image-operations';
import { httpErrorFor } from './http-errors';
import { authenticatedErrors, errorResponses, idParams } from './schemas';

// REST routes of a host's images: the archive is the streamed request body,
// answered with NDJSON progress lines and the result (like snapshots).

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

/** Aborts when the response is over (sent, or the client went away). */
function gone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => controller.abort());
  return controller.signal;
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
            { ...callerOf(request), signal: gone(reply) },
            request.params.id,
            { ref: request.query.ref, format: request.query.format, maxBytes: options.imageMaxBytes, ...(Number.isFinite(length) ? { sizeBytes: length } : {}) },
            body,
          );
        } catch (err) {
          if (isCorralError(err) && err.code === 'RESOURCE_EXHAUSTED') throw payloadTooLarge();
          throw err;
        }
        const lines = (async function* () {
          try {
            for await (const event of events) yield Buffer.from(`${JSON.stringify(event)}\n`);
          } catch (err) {
            // Headers are out: the failure becomes the last line.
            const failure = httpErrorFor(err);
            if (failure.serverFault) logger.error('image import failed', { reqId: request.id, err });
            yield Buffer.from(`${JSON.stringify({ type: 'error', ...failure.body })}\n`);
          }
        })();
        return reply.type('application/x-ndjson').header('cache-control', 'no-store').send(Readable.from(lines, { objectMode: false }));
      },
    );
  });

  api.get<{ Params: { id: string } }>('/v1/hosts/:id/images', { schema: imageSchemas.listHostImages }, async (request) => ({
    images: await images.listHostImages(callerOf(request), request.params.id),
  }));
}
