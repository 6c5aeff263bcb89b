// A FIFO lock for one process: callers of `run` take turns, so a
// read-decide-persist sequence (choosing free ports, bumping a refcount) is
// never interleaved with another. Not a cross-process lock: one agent owns
// its state directory.

export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  /** Runs `fn` once every earlier caller's `fn` has settled; its outcome is returned as is. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    const result = this.tail.then(() => fn());
    // The next caller waits for this one to settle, whether it failed or not.
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
