import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ResourceExhaustedError } from '@corral/domain';
import { tarFileHeader, tarTrailer } from './container-files';

// An upload on its way into a container is first written to a private file
// on the host (0600 in a 0700 directory), counting bytes as they come: past
// the limit the upload is refused and the spool removed, so nothing of it
// ever reaches the container.

export interface Spool {
  path: string;
  bytes: number;
  remove(): Promise<void>;
}

export async function spoolUpload(content: AsyncIterable<Buffer>, maxBytes: number, baseDir: string): Promise<Spool> {
  const dir = await mkdtemp(join(baseDir, 'corral-upload-'));
  const path = join(dir, 'data');
  const remove = () => rm(dir, { recursive: true, force: true });
  let bytes = 0;
  try {
    const file = await open(path, 'wx', 0o600);
    try {
      for await (const chunk of content) {
        bytes += chunk.length;
        if (bytes > maxBytes) throw new ResourceExhaustedError(`the file is larger than the limit of ${maxBytes} bytes`, { field: 'content' });
        await file.write(chunk);
      }
    } finally {
      await file.close();
    }
  } catch (err) {
    await remove();
    throw err;
  }
  return { path, bytes, remove };
}

/** A one-file tar archive of the spooled upload, streamed from disk. */
export function uploadTar(name: string, path: string, size: number, mode: number): Readable {
  return Readable.from(
    (async function* () {
      yield tarFileHeader(name, size, mode);
      for await (const chunk of createReadStream(path)) yield chunk as Buffer;
      yield tarTrailer(size);
    })(),
  );
}

/** Keeps the last 64 KiB of a stream's text (a program's stderr) for error mapping. */
export function collect(stream: Readable, limit = 64 * 1024): () => string {
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    text = (text + chunk).slice(-limit);
  });
  return () => text;
}
