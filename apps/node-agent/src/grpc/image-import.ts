import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError } from '@corral/domain';
import { AsyncQueue } from '@corral/grpc';
import type { agentV1 } from '@corral/proto';
import type { DriverRegistry } from '../drivers/driver-registry';
import { PodmanDriver, validateImageFormat, validateImageRef, type ImportProgress } from '../drivers/podman';

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

/** The podman driver for an image call, or the reason there is none. */
function imageStore(drivers: DriverRegistry, name: string): PodmanDriver {
  if (!name) throw new InvalidArgumentError('driver is required', { field: 'driver' });
  if (name === 'qemu') throw new FailedPreconditionError('driver qemu has no image store: VM images are files on the host', { field: 'driver' });
  const driver = drivers.get(name, 'driver');
  if (!(driver instanceof PodmanDriver)) throw new FailedPreconditionError(`driver ${name} has no image store`, { field: 'driver' });
  return driver;
}

const progress = (phase: string, receivedBytes: number, consumedBytes: number, totalBytes: number): Response => ({
  kind: { $case: 'progress', value: { phase, receivedBytes, consumedBytes, totalBytes } },
});

export async function* importImageStream(drivers: DriverRegistry, limits: ImageImportLimits, requests: AsyncIterable<Request>): AsyncGenerator<Response> {
  const iterator = requests[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done || first.value.kind?.$case !== 'header') throw new InvalidArgumentError('the first message must be the header', { field: 'header' });
  const header = first.value.kind.value;
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
      for (;;) {
        const next = await iterator.next();
        // Without eof the upload was cut short (a cancelled call ends like a finished one here).
        if (next.done) throw new InvalidArgumentError('the upload ended before eof', { field: 'eof' });
        const kind = next.value.kind;
        if (kind?.$case === 'eof') break;
        if (kind?.$case !== 'chunk') throw new InvalidArgumentError('only archive chunks may follow the header', { field: 'chunk' });
        received += kind.value.length;
        if (received > limits.imageMaxBytes) throw new ResourceExhaustedError(`the archive is larger than the limit of ${limits.imageMaxBytes} bytes`, { field: 'content' });
        if (declared > 0 && received > declared) throw new InvalidArgumentError(`the archive is larger than the declared ${declared} bytes`, { field: 'sizeBytes' });
        await file.write(kind.value);
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
      // Progress arrives from podman's reads while the import runs; relayed as it comes.
      const out = new AsyncQueue<Response>();
      const onProgress = (p: ImportProgress) => {
        if (p.phase === 'transferring') out.push(progress('importing', received, p.bytesRead, p.totalBytes));
        else if (p.phase === 'importing') out.push(progress('storing', received, p.bytesRead, p.totalBytes));
      };
      driver.importImage(path, ref, onProgress).then(
        (image) => {
          out.push({ kind: { $case: 'result', value: { imageId: image.imageId, ref: image.ref, bytes: image.bytes } } });
          out.end();
        },
        (err: unknown) => out.fail(err),
      );
      yield* out;
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
