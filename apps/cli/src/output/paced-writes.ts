import type { TextSink } from './printer';

// Writing a stream's content to stdout only as fast as stdout takes it. A
// Writable whose buffer is full returns false from write(); the caller then
// pulls nothing more from its gRPC stream until 'drain', so the stream's own
// flow control holds the sender back instead of the content piling up in
// this process.

/** What may close or fail under a waiting writer; nothing drains after either. */
const ENDINGS = ['close', 'error'] as const;

/** A sink that announces when its full buffer has room again: any Node Writable (process.stdout). */
interface DrainableSink extends TextSink {
  once(event: 'drain' | (typeof ENDINGS)[number], listener: () => void): unknown;
  removeListener(event: 'drain' | (typeof ENDINGS)[number], listener: () => void): unknown;
  destroyed?: boolean;
}

function isDrainable(sink: TextSink): sink is DrainableSink {
  const candidate = sink as Partial<DrainableSink>;
  return typeof candidate.once === 'function' && typeof candidate.removeListener === 'function';
}

/** The sink went away while content was still coming (`corral cp ID:/big - | head`). */
export class OutputClosedError extends Error {
  constructor() {
    super('the output was closed before everything was written');
    this.name = 'OutputClosedError';
  }
}

/**
 * Writes `chunk` and, when the sink says its buffer is full, resolves only
 * once it has drained (or `signal` aborts). Rejects with OutputClosedError
 * when the sink is closed or fails instead: it would never drain, and
 * whatever feeds it should stop. A plain sink (a test's string collector)
 * is written to and never waited on.
 */
export async function writePaced(sink: TextSink, chunk: string | Uint8Array, signal?: AbortSignal): Promise<void> {
  if (sink.write(chunk) !== false || !isDrainable(sink) || signal?.aborted) return;
  if (sink.destroyed) throw new OutputClosedError();
  await new Promise<void>((resolve, reject) => {
    const finish = (outcome: () => void) => () => {
      sink.removeListener('drain', drained);
      for (const event of ENDINGS) sink.removeListener(event, closed);
      signal?.removeEventListener('abort', aborted);
      outcome();
    };
    const drained = finish(resolve);
    const aborted = finish(resolve);
    const closed = finish(() => reject(new OutputClosedError()));
    sink.once('drain', drained);
    for (const event of ENDINGS) sink.once(event, closed);
    signal?.addEventListener('abort', aborted, { once: true });
  });
}
