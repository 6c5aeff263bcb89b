import { EventEmitter } from 'node:events';
import { OutputClosedError, writePaced } from './paced-writes';

// writePaced against a stub stdout: when it waits, what lets it go, and what
// makes it give up.

/** Lets every pending promise and I/O callback run: whatever could move on has. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** A stdout whose buffer is full whenever `full` is set; the test emits 'drain'. */
class StubStdout extends EventEmitter {
  readonly written: string[] = [];
  full = true;
  destroyed = false;
  write(chunk: string | Uint8Array): boolean {
    this.written.push(chunk.toString());
    return !this.full;
  }
}

function tracked(promise: Promise<void>) {
  const state = { settled: false };
  void promise.then(
    () => (state.settled = true),
    () => (state.settled = true),
  );
  return state;
}

describe('writePaced', () => {
  it('writes, and waits for drain while the sink is full', async () => {
    const out = new StubStdout();
    const write = writePaced(out, 'a');
    const state = tracked(write);
    await settle();
    expect(out.written).toEqual(['a']);
    expect(state.settled).toBe(false);
    out.emit('drain');
    await expect(write).resolves.toBeUndefined();
    expect(out.listenerCount('drain') + out.listenerCount('close') + out.listenerCount('error')).toBe(0);
  });

  it('does not wait on a sink with room, nor on a plain sink that cannot say it drained', async () => {
    const out = new StubStdout();
    out.full = false;
    await writePaced(out, 'a');
    const collected: string[] = [];
    await writePaced({ write: (c: string | Uint8Array) => (collected.push(c.toString()), false) }, 'b');
    expect(collected).toEqual(['b']);
  });

  it('gives up with OutputClosedError when the sink closes or fails instead of draining, or is already gone', async () => {
    const closing = new StubStdout();
    const closed = writePaced(closing, 'a');
    closing.emit('close');
    await expect(closed).rejects.toBeInstanceOf(OutputClosedError);

    const failing = new StubStdout();
    const failed = writePaced(failing, 'a');
    failing.emit('error', new Error('EPIPE'));
    await expect(failed).rejects.toBeInstanceOf(OutputClosedError);
    expect(failing.listenerCount('error')).toBe(0);

    const gone = new StubStdout();
    gone.destroyed = true;
    await expect(writePaced(gone, 'a')).rejects.toBeInstanceOf(OutputClosedError);
  });

  it('stops waiting when the signal aborts (Ctrl-C during exec)', async () => {
    const out = new StubStdout();
    const interrupted = new AbortController();
    const write = writePaced(out, 'a', interrupted.signal);
    interrupted.abort();
    await expect(write).resolves.toBeUndefined();
    expect(out.listenerCount('drain')).toBe(0);
  });
});
