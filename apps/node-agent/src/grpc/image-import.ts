import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, ResourceExhaustedError } from '@corral/domain';
import { firstMessageOf, uploadedChunks } from '@corral/grpc';
import type { agentV1 } from '@corral/proto';
import type { DriverRegistry } from '../drivers/driver-registry';
import { validateImageFormat, validateImageRef, type ImportProgress } from '../drivers/podman';
import { imageStore } from './image-store';
import { relayProgress } from './progress-relay';

// ImportImage and ListImages: an archive streamed in by the control plane is
// spooled to a private file under the agent's state dir (0600 in a 0700
// directory, counted against a limit as it comes, removed afterwards), then
// handed to the driver's image store. Progress is what really happened:
// bytes received, then bytes podman has read of the archive (podman import
// fetches it from this process, see drivers/podman/file-server.ts).

export interface ImageImportLimits {
  /** Largest archive accepted. */
  imageMaxBytes: number;
  /** Where archives are spooled (under the agent's state dir). */
  spoolDir: string;
}

/** A receiving progress message at most once per this many bytes (plus the last). */
const RECEIVE_PROGRESS_EVERY_BYTES = 1024 * 1024;

type Request = agentV1.ImportImageRequest;
type Response = agentV1.ImportImageResponse;

const progress = (phase: string, receivedBytes: number, consumedBytes: number, totalBytes: number): Response => ({
  kind: { $case: 'progress', value: { phase, receivedBytes, consumedBytes, totalBytes } },
});

export async function* importImageStream(drivers: DriverRegistry, limits: ImageImportLimits, requests: AsyncIterable<Request>): AsyncGenerator<Response> {
  const iterator = requests[Symbol.asyncIterator]();
  const header = await firstMessageOf(iterator, 'header', 'the header');
  const ref = validateImageRef(header.ref);
  const format = validateImageFormat(header.format);
  const driver = imageStore(drivers, header.driver);
  const declared = header.sizeBytes;
  if (declared > limits.imageMaxBytes) throw new ResourceExhaustedError(`the archive is larger than the limit of ${limits.imageMaxBytes} bytes`, { field: 'sizeBytes' });

  await mkdir(limits.spoolDir, { recursive: true, mode: 0o700 });
  const dir = await mkdtemp(join(limits.spoolDir, 'import-'));
  try {
    const path = join(dir, 'archive.tar');
    let received = 0;
    let reported = 0;
    const file = await open(path, 'wx', 0o600);
    try {
      // Without eof the upload was cut short (a cancelled call ends like a finished one here): nothing is imported.
      for await (const chunk of uploadedChunks(iterator, 'archive')) {
        received += chunk.length;
        if (received > limits.imageMaxBytes) throw new ResourceExhaustedError(`the archive is larger than the limit of ${limits.imageMaxBytes} bytes`, { field: 'content' });
        if (declared > 0 && received > declared) throw new InvalidArgumentError(`the archive is larger than the declared ${declared} bytes`, { field: 'sizeBytes' });
        await file.write(chunk);
        if (received - reported >= RECEIVE_PROGRESS_EVERY_BYTES) {
          reported = received;
          yield progress('receiving', received, 0, declared);
        }
      }
    } finally {
      await file.close();
    }
    if (declared > 0 && received !== declared) throw new InvalidArgumentError(`the archive has ${received} bytes, not the declared ${declared}`, { field: 'sizeBytes' });
    if (received === 0) throw new InvalidArgumentError('the archive is empty', { field: 'content' });
    yield progress('receiving', received, 0, received);

    if (format === 'rootfs-tar') {
      // Progress arrives from podman's reads while the import runs.
      yield* relayProgress<Response>(async (report) => {
        const onProgress = (p: ImportProgress) => {
          if (p.phase === 'transferring') report(progress('importing', received, p.bytesRead, p.totalBytes));
          else if (p.phase === 'importing') report(progress('storing', received, p.bytesRead, p.totalBytes));
        };
        const image = await driver.importImage(path, ref, onProgress);
        return { kind: { $case: 'result', value: { imageId: image.imageId, ref: image.ref, bytes: image.bytes } } };
      });
    } else {
      // podman load reads the file itself: nothing to count, so no consumed bytes are claimed.
      yield progress('importing', received, 0, received);
      const image = await driver.loadImage(path, ref);
      yield { kind: { $case: 'result', value: { imageId: image.imageId, ref: image.ref, bytes: image.bytes } } };
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function listImages(drivers: DriverRegistry, req: agentV1.ListImagesRequest): Promise<agentV1.ListImagesResponse> {
  const images = await imageStore(drivers, req.driver).listImages();
  return { images: images.map((i) => ({ imageId: i.imageId, refs: i.refs, sizeBytes: i.sizeBytes, createdAt: i.createdAt })) };
}
