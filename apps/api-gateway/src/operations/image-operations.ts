import { InvalidArgumentError, isCorralError, ResourceExhaustedError, UnavailableError } from '@corral/domain';
import { openBidiStream, type BidiCall, type PromiseClient, type StreamCallOpts } from '@corral/grpc';
import type { schedulerV1 } from '@corral/proto';
import { teamScopeOf } from './caller';
import type { OperationContext } from './corral-operations';
import { primed } from './primed';
import { progressEventsOf } from './progress-events';

// Image archives imported into a host's image store, and its listing:
// input is checked here (ref, format, host id), the caller's team goes to
// the scheduler, which applies the host access rules (admin: any host; a
// team: its own BYOC hosts). The upload is pumped beside the answers, so
// progress flows while the archive is still arriving.

export const IMAGE_FORMATS = ['rootfs-tar', 'oci-archive', 'docker-archive'] as const;
// docker's reference grammar without digests (the agent checks the same).
export const IMAGE_REF_PATTERN = '^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$';
const imageRef = new RegExp(IMAGE_REF_PATTERN);
// What may be pulled: [registry/]repository[:tag][@sha256:digest] (the agent checks the same, see its image-pull.ts).
export const PULL_REF_PATTERN =
  '^(?:[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]{1,5})?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$';
const pullRef = new RegExp(PULL_REF_PATTERN);
const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The scheduler's image calls. */
export interface HostImagesPort {
  importImage(opts?: StreamCallOpts): BidiCall<schedulerV1.ImportHostImageRequest, schedulerV1.ImportHostImageResponse>;
  listImages(request: schedulerV1.ListHostImagesRequest, opts?: StreamCallOpts): Promise<schedulerV1.ListHostImagesResponse>;
  pullImage(request: schedulerV1.PullHostImageRequest, opts?: StreamCallOpts): AsyncIterable<schedulerV1.PullHostImageResponse>;
}

export function schedulerHostImages(client: PromiseClient<schedulerV1.SchedulerServiceClient>): HostImagesPort {
  return {
    importImage: (opts = {}) => openBidiStream((md, o) => client.raw.importHostImage(md, o), opts),
    listImages: (request, opts = {}) => client.listHostImages(request, opts.signal ? { signal: opts.signal } : {}),
    // No deadline: a pull of a large image takes as long as the registry needs (the agent has its own timeout).
    pullImage: (request, opts = {}) => client.stream('pullHostImage', request, opts),
  };
}

export type ImageEvent =
  | { type: 'progress'; phase: string; receivedBytes: number; consumedBytes: number; totalBytes: number }
  | { type: 'result'; imageId: string; ref: string; bytes: number };

export type PullEvent =
  | { type: 'progress'; phase: string; ref: string; digest?: string; blobs: number; alreadyPresent?: boolean }
  | { type: 'result'; imageId: string; ref: string; digest: string };

export interface PullImageInput {
  ref: string;
  credentials?: { username?: string; password?: string };
}

export interface ImageView {
  imageId: string;
  refs: string[];
  sizeBytes: number;
  createdAt?: string;
}

export interface ImportImageInput {
  ref: string;
  format?: string;
  /** Declared size (Content-Length) if known. */
  sizeBytes?: number;
  maxBytes: number;
}

export interface ImageOperations {
  importHostImage(ctx: OperationContext, hostId: string, input: ImportImageInput, content: AsyncIterable<Buffer>): Promise<AsyncIterable<ImageEvent>>;
  listHostImages(ctx: OperationContext, hostId: string): Promise<ImageView[]>;
  /** Progress events, then the result; refusals before the first event are thrown. */
  pullHostImage(ctx: OperationContext, hostId: string, input: PullImageInput): Promise<AsyncIterable<PullEvent>>;
}

function checkHostId(hostId: string): string {
  if (typeof hostId !== 'string' || !HOST_ID.test(hostId)) throw new InvalidArgumentError('id must be a host id', { field: 'id' });
  return hostId;
}

const CHUNK = 64 * 1024;

/** Both or neither; checked here so a REST and a gRPC caller hear the same field names. Never echoed. */
function checkCredentials(credentials: PullImageInput['credentials']): { username: string; password: string } | undefined {
  const username = credentials?.username ?? '';
  const password = credentials?.password ?? '';
  if (!username && !password) return undefined;
  if (typeof username !== 'string' || !username || username.length > 256 || /[:\s]/.test(username)) {
    throw new InvalidArgumentError('credentials.username must be 1-256 characters without ":" or spaces', { field: 'credentials.username' });
  }
  if (typeof password !== 'string' || !password || password.length > 4096 || /[\r\n]/.test(password)) {
    throw new InvalidArgumentError('credentials.password must be 1-4096 characters on one line', { field: 'credentials.password' });
  }
  return { username, password };
}

export function createImageOperations(port: HostImagesPort | undefined): ImageOperations {
  const images = () => {
    if (!port) throw new UnavailableError('images are not available');
    return port;
  };
  return {
    async importHostImage(ctx, hostId, input, content) {
      checkHostId(hostId);
      if (typeof input.ref !== 'string' || input.ref.length > 255 || !imageRef.test(input.ref)) {
        throw new InvalidArgumentError('ref must be an image reference such as localhost/app:1', { field: 'ref' });
      }
      const format = input.format ?? 'rootfs-tar';
      if (!(IMAGE_FORMATS as readonly string[]).includes(format)) throw new InvalidArgumentError(`format must be one of ${IMAGE_FORMATS.join(', ')}`, { field: 'format' });
      const tooLarge = () => new ResourceExhaustedError(`the archive is larger than the limit of ${input.maxBytes} bytes`, { field: 'content' });
      if (input.sizeBytes !== undefined && input.sizeBytes > input.maxBytes) throw tooLarge();
      const teamId = teamScopeOf(ctx.caller);
      const call = images().importImage(ctx.signal ? { signal: ctx.signal } : {});
      let overflow = false;
      // Why the upload stopped, if it did (e.g. a gRPC caller that ended without eof).
      let uploadFailure: unknown;
      await call.write({
        kind: { $case: 'header', value: { hostId, teamId, image: { driver: 'podman', ref: input.ref, format, sizeBytes: input.sizeBytes ?? 0 } } },
      });
      // The body is pumped beside the answers; without eof upstream imports nothing.
      void (async () => {
        try {
          let bytes = 0;
          for await (const chunk of content) {
            bytes += chunk.length;
            if (bytes > input.maxBytes) {
              overflow = true;
              call.cancel();
              return;
            }
            for (let i = 0; i < chunk.length; i += CHUNK) await call.write({ kind: { $case: 'chunk', value: chunk.subarray(i, i + CHUNK) } });
          }
          await call.write({ kind: { $case: 'eof', value: true } });
          call.end();
        } catch (err) {
          uploadFailure = err;
          call.cancel();
        }
      })();
      const events = (async function* (): AsyncGenerator<ImageEvent> {
        try {
          yield* progressEventsOf(call.responses);
        } catch (err) {
          if (overflow) throw tooLarge();
          if (isCorralError(uploadFailure)) throw uploadFailure;
          throw err;
        }
        if (overflow) throw tooLarge();
      })();
      // Errors before the first answer (refusals, limits) become ordinary statuses.
      return primed(events);
    },
    async pullHostImage(ctx, hostId, input) {
      checkHostId(hostId);
      if (typeof input.ref !== 'string' || input.ref.length > 512 || !pullRef.test(input.ref)) {
        throw new InvalidArgumentError('ref must be an image reference such as docker.io/library/busybox:1.36', { field: 'ref' });
      }
      const credentials = checkCredentials(input.credentials);
      const upstream = images().pullImage(
        { hostId, teamId: teamScopeOf(ctx.caller), image: { driver: 'podman', ref: input.ref, credentials } },
        ctx.signal ? { signal: ctx.signal } : {},
      );
      // Empty digests and a false alreadyPresent are left out of the events (proto3 cannot tell them from absent).
      const events: AsyncIterable<PullEvent> = progressEventsOf(upstream, {
        progress: (p) => ({ phase: p.phase, ref: p.ref, ...(p.digest ? { digest: p.digest } : {}), blobs: p.blobs, ...(p.alreadyPresent ? { alreadyPresent: true } : {}) }),
        result: (r) => ({ imageId: r.imageId, ref: r.ref, digest: r.digest }),
      });
      return primed(events);
    },
    async listHostImages(ctx, hostId) {
      checkHostId(hostId);
      const res = await images().listImages({ hostId, teamId: teamScopeOf(ctx.caller), driver: 'podman' }, ctx.signal ? { signal: ctx.signal } : {});
      return res.images.map((i) => ({ imageId: i.imageId, refs: i.refs, sizeBytes: i.sizeBytes, ...(i.createdAt ? { createdAt: i.createdAt.toISOString() } : {}) }));
    },
  };
}
