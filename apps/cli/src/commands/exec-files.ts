import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type { Command } from 'commander';
import { callClientStream, openBidiStream } from '@corral/grpc';
import type { apiV1 } from '@corral/proto';
import { writePaced } from '../output/paced-writes';
import type { TextSink } from '../output/printer';
import type { Session } from '../session';
import { UsageError } from '../usage-error';

// `corral exec` (stdin/stdout passthrough, raw terminal for -t, the
// command's exit code as corral's) and `corral cp` (files in and out of a
// workload, streamed in chunks).

const CHUNK_BYTES = 64 * 1024;
/** `ID:/path`: a workload id, a colon, an absolute path. */
const REMOTE = /^([A-Za-z0-9][A-Za-z0-9._-]*):(\/.*)$/;

/**
 * Relays a running command's output to `out`, pulling its next message only
 * once the previous one is written: while stdout is full the call is read no
 * further and its flow control holds the workload's output back.
 */
export async function relayExecOutput(
  responses: AsyncIterable<apiV1.ExecWorkloadResponse>,
  out: { stdout: TextSink; stderr: TextSink },
  onExit: (exitCode: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  for await (const message of responses) {
    const kind = message.kind;
    if (kind?.$case === 'stdout') await writePaced(out.stdout, kind.value, signal);
    else if (kind?.$case === 'stderr') await writePaced(out.stderr, kind.value, signal);
    else if (kind?.$case === 'exit') onExit(kind.value.exitCode);
  }
}

/** A downloaded file's chunks to `out`, each pulled only once the previous one is written. */
export async function copyChunksTo(chunks: AsyncIterable<{ chunk: Uint8Array }>, out: TextSink): Promise<void> {
  for await (const message of chunks) await writePaced(out, message.chunk);
}

export function registerExec(program: Command, session: Session): void {
  program
    .command('exec')
    .description('run a command in a running workload: corral exec [-i] [-t] ID -- CMD ARGS...')
    .argument('<id>', 'workload id')
    .argument('<command...>', 'the program and its arguments (put them after --)')
    .option('-i, --interactive', 'pass stdin to the command')
    .option('-t, --tty', 'give the command a terminal (raw mode when stdin is one)')
    .option('-w, --workdir <dir>', 'working directory inside the workload')
    .action(async (id: string, argv: string[], options: { interactive?: boolean; tty?: boolean; workdir?: string }, command: Command) => {
      const client = session.client(command);
      const interrupted = new AbortController();
      const call = openBidiStream<apiV1.ExecWorkloadRequest, apiV1.ExecWorkloadResponse>((md, o) => client.raw.execWorkload(md, o), {
        metadata: session.metadata(command),
        signal: interrupted.signal,
      });
      const { stdin, stdout, stderr } = session.io;
      const tty = options.tty ?? false;
      const terminal = tty && stdin?.isTTY === true && typeof stdin.setRawMode === 'function';
      const size = () => ({ columns: stdout.columns ?? 0, rows: stdout.rows ?? 0 });
      await call.write({
        kind: {
          $case: 'start',
          value: { id, command: argv, tty, env: {}, workingDir: options.workdir ?? '', size: tty && stdout.isTTY ? size() : undefined },
        },
      });
      const onResize = () => void call.write({ kind: { $case: 'resize', value: size() } });
      const onInterrupt = () => interrupted.abort();
      // In raw mode Ctrl-C is a byte for the remote command, not a signal here.
      if (!terminal) process.once('SIGINT', onInterrupt);
      if (terminal) {
        stdin?.setRawMode?.(true);
        stdout.on?.('resize', onResize);
      }
      let exitCode: number | undefined;
      try {
        const feeding = (async () => {
          if (options.interactive && stdin) {
            for await (const chunk of stdin) {
              const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
              for (let i = 0; i < data.length; i += CHUNK_BYTES) await call.write({ kind: { $case: 'stdin', value: data.subarray(i, i + CHUNK_BYTES) } });
              if (exitCode !== undefined) break;
            }
          }
          await call.write({ kind: { $case: 'stdinEof', value: true } });
        })().catch(() => undefined);
        void feeding;
        await relayExecOutput(call.responses, { stdout, stderr }, (code) => (exitCode = code), interrupted.signal);
      } finally {
        process.removeListener('SIGINT', onInterrupt);
        if (terminal) {
          stdin?.setRawMode?.(false);
          stdout.removeListener?.('resize', onResize);
        }
        // Whatever still reads stdin must not keep corral alive.
        stdin?.pause?.();
        call.end();
      }
      if (exitCode === undefined) {
        if (interrupted.signal.aborted) {
          session.exitCode = 130;
          return;
        }
        throw new Error('the command ended without an exit status');
      }
      session.exitCode = exitCode;
    });
}

export function registerCopy(program: Command, session: Session): void {
  program
    .command('cp')
    .description('copy a file into or out of a running workload: corral cp LOCAL ID:/PATH, or corral cp ID:/PATH LOCAL ("-" is stdin/stdout)')
    .argument('<source>', 'a local file, "-" for stdin, or ID:/PATH')
    .argument('<destination>', 'ID:/PATH, a local file, or "-" for stdout')
    .option('--mode <octal>', 'permission bits of a file written into the workload (default 0644)')
    .action(async (source: string, destination: string, options: { mode?: string }, command: Command) => {
      const from = REMOTE.exec(source);
      const to = REMOTE.exec(destination);
      if ((from && to) || (!from && !to)) throw new UsageError('exactly one of source and destination must be ID:/PATH');
      const client = session.client(command);
      const metadata = session.metadata(command);
      if (to) {
        const mode = options.mode === undefined ? 0 : parseInt(options.mode, 8);
        if (options.mode !== undefined && (!/^0?[0-7]{1,4}$/.test(options.mode) || Number.isNaN(mode))) throw new UsageError('--mode must be octal permission bits, e.g. 0644');
        const input: AsyncIterable<Buffer | string> = source === '-' ? (session.io.stdin ?? Readable.from([])) : createReadStream(source, { highWaterMark: CHUNK_BYTES });
        const [, id, path] = to;
        const requests = (async function* (): AsyncGenerator<apiV1.WriteWorkloadFileRequest> {
          yield { kind: { $case: 'header', value: { id, path, mode } } };
          for await (const chunk of input) {
            const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
            for (let i = 0; i < data.length; i += CHUNK_BYTES) yield { kind: { $case: 'chunk', value: data.subarray(i, i + CHUNK_BYTES) } };
          }
          yield { kind: { $case: 'eof', value: true } };
        })();
        const res = await callClientStream<apiV1.WriteWorkloadFileRequest, apiV1.WriteWorkloadFileResponse>(
          (md, o, cb) => client.raw.writeWorkloadFile(md, o, cb),
          requests,
          { metadata },
        );
        session.printer(command).result({ id, path, bytes: res.bytes }, (r) => `${r.bytes} bytes written to ${r.id}:${r.path}\n`);
        return;
      }
      const [, id, path] = from as RegExpExecArray;
      const chunks = client.stream('readWorkloadFile', { id, path }, { metadata });
      if (destination === '-') {
        await copyChunksTo(chunks, session.io.stdout);
        return;
      }
      // Into a temporary file first: a failed copy leaves no half-written file.
      const temp = `${destination}.corral-partial`;
      try {
        await pipeline(
          Readable.from(
            (async function* () {
              for await (const message of chunks) yield Buffer.from(message.chunk);
            })(),
          ),
          createWriteStream(temp, { flags: 'w', mode: 0o644 }),
        );
        await rename(temp, destination);
      } catch (err) {
        await rm(temp, { force: true });
        throw err;
      }
    });
}
