import type { FastifyContextConfig, FastifyInstance } from 'fastify';

// How long a client may take to send its request (headers and body).
// Node's own `requestTimeout` is one number for the whole server, so it
// either cuts a multi-gigabyte image upload at a minute or lets any client
// trickle an ordinary request for hours. Instead the gateway turns Node's
// off and arms a timer per request here: ordinary routes get
// GATEWAY_REQUEST_TIMEOUT_MS, routes marked `config: { longRequest: 'upload' }`
// (image import, file upload) GATEWAY_UPLOAD_TIMEOUT_MS. Answers are not
// limited: a long NDJSON answer (pull, snapshot) or a followed log runs
// after its request has arrived, for as long as the backend streams.
// Headers still have Node's headersTimeout.

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `upload`: the body is a stream of any length, given the upload timeout instead of the ordinary one. */
    longRequest?: 'upload';
  }
}

export interface RequestTimeouts {
  /** Longest time to receive an ordinary request. */
  requestTimeoutMs: number;
  /** The same for upload routes; 0: no limit. */
  uploadTimeoutMs: number;
}

export const DEFAULT_REQUEST_TIMEOUTS: RequestTimeouts = { requestTimeoutMs: 60_000, uploadTimeoutMs: 6 * 60 * 60_000 };

/** The time a route's request may take to arrive; 0: unlimited. */
export function requestTimeoutOf(config: FastifyContextConfig | undefined, timeouts: RequestTimeouts): number {
  return config?.longRequest === 'upload' ? timeouts.uploadTimeoutMs : timeouts.requestTimeoutMs;
}

const TIMED_OUT_BODY = JSON.stringify({ error: 'request_timeout', message: 'the request did not arrive in time' });
const TIMED_OUT = Buffer.from(
  `HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(TIMED_OUT_BODY)}\r\n\r\n${TIMED_OUT_BODY}`,
);

/** Arms the per-route timer on every request of `app` (register before the routes). */
export function enforceRequestTimeouts(app: FastifyInstance, timeouts: RequestTimeouts): void {
  app.addHook('onRequest', (request, reply, done) => {
    const limit = requestTimeoutOf(request.routeOptions.config, timeouts);
    if (limit > 0 && !request.raw.complete) {
      const timer = setTimeout(() => {
        if (request.raw.complete) return;
        // Like Node's own request timeout: a 408 if nothing was answered yet, then the connection is closed.
        const socket = request.raw.socket;
        if (!reply.raw.headersSent && socket.writable) socket.end(TIMED_OUT);
        else socket.destroy();
        setTimeout(() => socket.destroy(), 1000).unref();
      }, limit);
      timer.unref();
      const clear = () => clearTimeout(timer);
      // 'end': the whole body has been read; 'close': the answer is over.
      request.raw.once('end', clear);
      reply.raw.once('close', clear);
    }
    done();
  });
}
