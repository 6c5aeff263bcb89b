/**
 * The first value of an async iterable, and the iterable of all of them
 * (first included): errors before any content (refusals, limits) surface
 * here, while the caller can still answer with an ordinary status, and not
 * in the middle of a stream whose headers are out.
 */
export async function primed<T>(source: AsyncIterable<T>): Promise<AsyncIterable<T>> {
  const iterator = source[Symbol.asyncIterator]();
  const first = await iterator.next();
  return (async function* () {
    try {
      if (first.done) return;
      yield first.value;
      for (;;) {
        const next = await iterator.next();
        if (next.done) return;
        yield next.value;
      }
    } finally {
      await iterator.return?.();
    }
  })();
}
