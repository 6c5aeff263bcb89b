import { NotFoundError } from '@corral/domain';
import { AsyncQueue, type BidiCall } from '@corral/grpc';
import type { schedulerV1 } from '@corral/proto';
import type { HostImagesPort } from '../operations/image-operations';

/** A scheduler that answers a progress line per chunk and the result after eof; refuses host "nope". */
export class FakeHostImages implements HostImagesPort {
  readonly headers: schedulerV1.ImportHostImageHeader[] = [];
  received = 0;
  /** Imports that saw eof (and so finished). */
  completed = 0;
  listed: schedulerV1.ListHostImagesRequest[] = [];

  importImage(): BidiCall<schedulerV1.ImportHostImageRequest, schedulerV1.ImportHostImageResponse> {
    const out = new AsyncQueue<schedulerV1.ImportHostImageResponse>();
    let bytes = 0;
    return {
      write: async (m) => {
        if (m.kind?.$case === 'header') {
          this.headers.push(m.kind.value);
          if (m.kind.value.hostId === 'nope') out.fail(new NotFoundError('no host nope'));
        } else if (m.kind?.$case === 'chunk') {
          bytes += m.kind.value.length;
          this.received += m.kind.value.length;
          out.push({ kind: { $case: 'progress', value: { phase: 'receiving', receivedBytes: bytes, consumedBytes: 0, totalBytes: 0 } } });
        } else if (m.kind?.$case === 'eof') {
          this.completed += 1;
          out.push({ kind: { $case: 'progress', value: { phase: 'importing', receivedBytes: bytes, consumedBytes: bytes, totalBytes: bytes } } });
          out.push({ kind: { $case: 'result', value: { imageId: 'f'.repeat(64), ref: this.headers[this.headers.length - 1]?.image?.ref ?? '', bytes } } });
          out.end();
        }
      },
      end: () => undefined,
      cancel: () => out.fail(new Error('cancelled')),
      responses: out,
    };
  }

  readonly pulls: schedulerV1.PullHostImageRequest[] = [];

  /** Two progress lines and the result; host "nope" is NotFound, a ref ending in ":missing" fails after the first line. */
  async *pullImage(request: schedulerV1.PullHostImageRequest): AsyncIterable<schedulerV1.PullHostImageResponse> {
    this.pulls.push(request);
    if (request.hostId === 'nope') throw new NotFoundError('no host nope');
    const ref = request.image?.ref ?? '';
    yield { kind: { $case: 'progress', value: { phase: 'resolving', digest: '', blobs: 0, alreadyPresent: false, ref } } };
    if (ref.endsWith(':missing')) throw new NotFoundError('registry has no such image', { field: 'ref' });
    yield { kind: { $case: 'progress', value: { phase: 'copying-blob', digest: `sha256:${'1'.repeat(64)}`, blobs: 1, alreadyPresent: false, ref } } };
    yield { kind: { $case: 'result', value: { imageId: 'd'.repeat(64), ref, digest: `sha256:${'2'.repeat(64)}` } } };
  }

  async listImages(request: schedulerV1.ListHostImagesRequest): Promise<schedulerV1.ListHostImagesResponse> {
    this.listed.push(request);
    return { images: [{ imageId: 'e'.repeat(64), refs: ['localhost/app:1'], sizeBytes: 12, createdAt: new Date('2026-01-02T03:04:05Z') }] };
  }
}

