import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { openBidiStream } from '@corral/grpc';
import type { apiV1 } from '@corral/proto';
import { renderDetails, renderTable } from '../output/printer';
import type { Session } from '../session';
import { UsageError } from '../usage-error';

// `corral images import|list`: an archive streamed into a host's podman
// store over the public gRPC API, progress on stderr (stdout holds only the
// result), and the store's listing.

const CHUNK_BYTES = 64 * 1024;
export const IMAGE_FORMATS = ['rootfs-tar', 'oci-archive', 'docker-archive'] as const;

const mebibytes = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;

export function registerImages(program: Command, session: Session): void {
  const images = program.command('images').description("images in a host's podman store");

  images
    .command('import')
    .description('import an image archive into a host, showing its progress')
    .requiredOption('--host <id>', 'the host')
    .requiredOption('--ref <ref>', 'the image reference to give it, e.g. localhost/app:1')
    .option('--format <format>', `archive format: ${IMAGE_FORMATS.join(', ')}`, 'rootfs-tar')
    .argument('<file>', 'the archive')
    .action(async (file: string, options: { host: string; ref: string; format: string }, command: Command) => {
      if (!(IMAGE_FORMATS as readonly string[]).includes(options.format)) throw new UsageError(`--format must be one of ${IMAGE_FORMATS.join(', ')}`);
      const { size } = await stat(file);
      const client = session.client(command);
      const interrupted = new AbortController();
      const onInterrupt = () => interrupted.abort();
      process.once('SIGINT', onInterrupt);
      try {
        const call = openBidiStream<apiV1.ImportHostImageRequest, apiV1.ImportHostImageResponse>((md, o) => client.raw.importHostImage(md, o), {
          metadata: session.metadata(command),
          signal: interrupted.signal,
        });
        await call.write({ kind: { $case: 'header', value: { hostId: options.host, ref: options.ref, format: options.format, sizeBytes: size } } });
        // The upload runs beside the answers: progress arrives while it is still going.
        void (async () => {
          try {
            for await (const chunk of createReadStream(file, { highWaterMark: CHUNK_BYTES })) await call.write({ kind: { $case: 'chunk', value: chunk as Buffer } });
            await call.write({ kind: { $case: 'eof', value: true } });
            call.end();
          } catch {
            call.cancel();
          }
        })();
        for await (const event of call.responses) {
          const kind = event.kind;
          if (kind?.$case === 'progress') {
            const p = kind.value;
            const consumed = p.consumedBytes ? `, podman read ${mebibytes(p.consumedBytes)}` : '';
            session.io.stderr.write(`${p.phase}: ${mebibytes(p.receivedBytes)} of ${mebibytes(p.totalBytes || size)} received${consumed}\n`);
          } else if (kind?.$case === 'result') {
            const r = kind.value;
            session.printer(command).result({ hostId: options.host, imageId: r.imageId, ref: r.ref, bytes: r.bytes }, (v) =>
              renderDetails([
                ['Host', v.hostId],
                ['Image', v.imageId],
                ['Ref', v.ref],
                ['Size', mebibytes(v.bytes)],
              ]),
            );
          }
        }
      } finally {
        process.removeListener('SIGINT', onInterrupt);
      }
    });

  images
    .command('list')
    .alias('ls')
    .description("list a host's images")
    .requiredOption('--host <id>', 'the host')
    .action(async (options: { host: string }, command: Command) => {
      const res = await session.client(command).listHostImages({ hostId: options.host });
      const views = res.images.map((i) => ({ imageId: i.imageId, refs: i.refs, sizeBytes: i.sizeBytes, createdAt: i.createdAt ? i.createdAt.toISOString() : null }));
      session.printer(command).result({ images: views }, ({ images: rows }) =>
        renderTable(rows, [
          { header: 'IMAGE', value: (i) => i.imageId.slice(0, 12) },
          { header: 'REFS', value: (i) => i.refs.join(',') },
          { header: 'SIZE', value: (i) => mebibytes(i.sizeBytes) },
          { header: 'CREATED', value: (i) => i.createdAt ?? '' },
        ]),
      );
    });
}
