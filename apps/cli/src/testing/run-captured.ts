import { Readable } from 'node:stream';
import { runCli } from '../run-cli';

// How the CLI's tests run a command line: in process, with stdout and
// stderr captured as text and the environment given (no real terminal).

/** A stdout or stderr that keeps everything written to it. */
export function textSink() {
  let text = '';
  return { write: (chunk: string | Uint8Array) => ((text += chunk.toString()), true), text: () => text };
}

export interface CapturedRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `corral args...` with `env` (e.g. CORRAL_ADDR, CORRAL_API_KEY) and, when given, `stdin` as its input. */
export async function runCaptured(args: string[], env: Record<string, string | undefined>, stdin?: string): Promise<CapturedRun> {
  const stdout = textSink();
  const stderr = textSink();
  const code = await runCli(args, { stdout, stderr, env, ...(stdin !== undefined ? { stdin: Readable.from([Buffer.from(stdin)]) } : {}) });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}
