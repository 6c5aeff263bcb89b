import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { iterateServerStream, openBidiStream } from '@corral/grpc';
import type { agentV1, apiV1 } from '@corral/proto';
import { renderDetails, renderTable } from '../output/printer';
import type { Session } from '../session';
import { UsageError } from '../usage-error';

// `corral images import|pull|list`: an archive streamed into a host's
// podman store, or pulled by the host from a registry, over the public gRPC
// API, progress on stderr (stdout holds only the result), and the store's
// listing. A registry password is read from stdin (--password-stdin), never
// taken as an argument, which other users could read in `ps`.

const CHUNK_BYTES = 64 * 1024;
export const IMAGE_FORMATS = ['rootfs-tar', 'oci-archive', 'docker-archive'] as const;

const mebibytes = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;

/** All of stdin, without the line end a shell's echo or a password file adds. */
async function readPassword(session: Session): Promise<string> {
  const stdin = session.io.stdin;
  if (!stdin) throw new UsageError('--password-stdin needs the password on stdin');
  const parts: Buffer[] = [];
  for await (const chunk of stdin) parts.push(Buffer.from(chunk));
  const password = Buffer.concat(parts).toString('utf8').replace(/\r?\n$/, '');
  if (!password) throw new UsageError('--password-stdin read an empty password');
  return password;
}

/** One progress line of a pull, for people. */
function describePull(p: agentV1.PullImageProgress): string {
  const digest = p.digest ? ` ${p.digest.slice(0, 19)}` : '';
  switch (p.phase) {
    case 'copying-blob':
      return `copying blob${digest}${p.alreadyPresent ? ' (already present)' : ''} [${p.blobs}]`;
    case 'copying-config':
      return `copying config${digest}`;
    case 'resolving':
      return `resolving ${p.ref}`;
    default:
      return p.phase.replace(/-/g, ' ');
  }
}

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
    .command('pull')
    .description('pull an image from a registry into a host, showing its progress')
    .requiredOption('--host <id>', 'the host')
    .option('--username <name>', 'registry login (with --password-stdin)')
    .option('--password-stdin', 'read the registry password from stdin')
    .argument('<ref>', 'e.g. docker.io/library/busybox:1.36 (no registry: docker.io; no tag: latest)')
    .action(async (ref: string, options: { host: string; username?: string; passwordStdin?: boolean }, command: Command) => {
      if (Boolean(options.username) !== Boolean(options.passwordStdin)) throw new UsageError('--username and --password-stdin go together');
      const credentials = options.username ? { username: options.username, password: await readPassword(session) } : undefined;
      const client = session.client(command);
      const interrupted = new AbortController();
      const onInterrupt = () => interrupted.abort();
      process.once('SIGINT', onInterrupt);
      try {
        const events = iterateServerStream<apiV1.PullHostImageResponse>((md, o) => client.raw.pullHostImage({ hostId: options.host, ref, credentials }, md, o), {
          metadata: session.metadata(command),
          // Ctrl-C cancels the call, which kills the pull on the host.
          signal: interrupted.signal,
        });
        for await (const event of events) {
          const kind = event.kind;
          if (kind?.$case === 'progress') session.io.stderr.write(`${describePull(kind.value)}\n`);
          else if (kind?.$case === 'result') {
            const r = kind.value;
            session.printer(command).result({ hostId: options.host, imageId: r.imageId, ref: r.ref, digest: r.digest }, (v) =>
              renderDetails([
                ['Host', v.hostId],
                ['Image', v.imageId],
                ['Ref', v.ref],
                ['Digest', v.digest],
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
