import { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';
import { httpErrorFor } from './http-errors';

// REST answers of the operations that report as they go (snapshot, image
// import, image pull): newline-delimited JSON, one event a line. Whatever
// fails before the first line is an ordinary HTTP error; afterwards the
// headers are out, so the failure becomes the last line
// `{"type":"error","error":"...","message":"..."}`.

/**
 * Aborts when the response is over: sent, or cut short because the client
 * went away. (The request's own 'close' fires as soon as its body has been
 * read, which is no sign of the client leaving.)
 */
export function responseGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => controller.abort());
  return controller.signal;
}

/** Events as NDJSON lines; a failure once lines are out becomes the last line. */
export async function* ndjsonLines(events: AsyncIterable<object>, onServerFault: (err: unknown) => void): AsyncGenerator<Buffer> {
  try {
    for await (const event of events) yield Buffer.from(`${JSON.stringify(event)}\n`);
  } catch (err) {
    const failure = httpErrorFor(err);
    if (failure.serverFault) onServerFault(err);
    yield Buffer.from(`${JSON.stringify({ type: 'error', ...failure.body })}\n`);
  }
}

/** Answers with `events` as an uncached NDJSON body; `onServerFault` hears of failures that are the server's own. */
export function sendNdjson(reply: FastifyReply, events: AsyncIterable<object>, onServerFault: (err: unknown) => void): FastifyReply {
  const body = Readable.from(ndjsonLines(events, onServerFault), { objectMode: false });
  // Failures are lines; only a broken connection is left, and that needs no answer.
  body.once('error', () => undefined);
  return reply.type('application/x-ndjson').header('cache-control', 'no-store').send(body);
}
