import { setMaxListeners } from 'node:events';
import { request } from 'node:http';
import { now } from './stats';

// "Serving" means what a client sees: a complete HTTP answer holding the
// page's text. A TCP accept is not enough: qemu's user networking accepts
// on a hostfwd port before the guest is up, and such a connection then
// hangs (the guest never answers slirp's SYN) until the client gives up.
// So attempts overlap: a new one starts every `intervalMs` while earlier
// ones are still waiting, and the first full answer wins. Otherwise the
// resolution would be one attempt's timeout, not the interval.

/** GET / on 127.0.0.1:port; the body, or a rejection on any error, after timeoutMs, or on abort. */
export function httpGet(port: number, timeoutMs: number, signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', timeout: timeoutMs, agent: false, signal }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export interface ServeWait {
  port: number;
  /** Text the page must contain. */
  text: string;
  /** Time between starting attempts; use the same for the two sides of a comparison. */
  intervalMs: number;
  timeoutMs: number;
  /** Checked before each attempt: give up early (the workload has exited...). */
  abandon?: () => string | undefined;
}

// Long enough for a loaded tcg guest to answer a fresh connection, short
// enough that attempts begun before the guest was up do not pile up.
const ATTEMPT_TIMEOUT_MS = 500;
const MAX_IN_FLIGHT = 32;

/** Resolves at the first answer holding `text`; rejects after `timeoutMs` with the last error. */
export function waitServing(wait: ServeWait): Promise<void> {
  const deadline = now() + wait.timeoutMs;
  const abort = new AbortController();
  setMaxListeners(MAX_IN_FLIGHT + 8, abort.signal);
  return new Promise<void>((resolve, reject) => {
    let last = 'no attempt';
    let inFlight = 0;
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      abort.abort(); // attempts still waiting are dropped
      if (err) reject(err);
      else resolve();
    };
    const tick = () => {
      if (done) return;
      const why = wait.abandon?.();
      if (why) return finish(new Error(`port ${wait.port} never served: ${why}`));
      if (now() > deadline) return finish(new Error(`port ${wait.port} did not serve within ${wait.timeoutMs} ms (${last})`));
      if (inFlight < MAX_IN_FLIGHT) {
        inFlight++;
        httpGet(wait.port, ATTEMPT_TIMEOUT_MS, abort.signal).then(
          (body) => {
            inFlight--;
            if (body.includes(wait.text)) finish();
            else last = `unexpected page: ${body.slice(0, 80)}`;
          },
          (err: Error) => {
            inFlight--;
            if (!done) last = err.message;
          },
        );
      }
      timer = setTimeout(tick, wait.intervalMs);
    };
    tick();
  });
}
