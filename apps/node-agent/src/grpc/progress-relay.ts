import { AsyncQueue } from '@corral/grpc';

// The agent's long operations (snapshot, image import, image pull) report
// progress through a callback while they run; their gRPC streams relay each
// report as it comes and end with the operation's result.

/**
 * Starts `run`, yields every message it `report`s as it comes, then the
 * message it resolves with (its result); throws what it fails with.
 */
export async function* relayProgress<M>(run: (report: (message: M) => void) => Promise<M>): AsyncGenerator<M> {
  const out = new AsyncQueue<M>();
  (async () => run((message) => out.push(message)))().then(
    (result) => {
      out.push(result);
      out.end();
    },
    (err: unknown) => out.fail(err),
  );
  yield* out;
}
