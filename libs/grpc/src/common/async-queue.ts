/**
 * Holds a producer back while a queue is full: `pause` once `highWaterMark`
 * items wait unread, `resume` once the reader has taken them down to half of
 * that. For producers that push (a stream's 'data', a child's stdout) and can
 * be paused at their source, so what waits here stays bounded.
 */
export interface QueueFlowControl {
  highWaterMark: number;
  pause(): void;
  resume(): void;
}

/**
 * A push-to-pull queue: events from a stream (data, end, error) become an
 * AsyncIterable without handing the stream itself to `for await`, whose
 * early return would destroy a duplex call both ways. Unbounded unless given
 * flow control.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting?: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void };
  private ended = false;
  private failure?: { error: unknown };
  private paused = false;

  constructor(
    private readonly onReturn?: () => void,
    private readonly flow?: QueueFlowControl,
  ) {}

  /** Items pushed and not read yet. */
  get length(): number {
    return this.items.length;
  }

  push(item: T): void {
    if (this.ended || this.failure) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w.resolve({ value: item, done: false });
      return;
    }
    this.items.push(item);
    if (this.flow && !this.paused && this.items.length >= this.flow.highWaterMark) {
      this.paused = true;
      this.flow.pause();
    }
  }

  end(): void {
    if (this.ended || this.failure) return;
    this.ended = true;
    this.flush();
  }

  fail(error: unknown): void {
    if (this.ended || this.failure) return;
    this.failure = { error };
    this.flush();
  }

  private flush(): void {
    if (!this.waiting || this.items.length > 0) return;
    const w = this.waiting;
    this.waiting = undefined;
    if (this.failure) w.reject(this.failure.error);
    else w.resolve({ value: undefined, done: true });
  }

  private take(): T {
    const item = this.items.shift() as T;
    if (this.flow && this.paused && this.items.length <= this.flow.highWaterMark / 2) {
      this.paused = false;
      this.flow.resume();
    }
    return item;
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.items.length > 0) return Promise.resolve({ value: this.take(), done: false });
        if (this.failure) return Promise.reject(this.failure.error);
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
      },
      return: () => {
        this.ended = true;
        this.items.length = 0;
        // Nobody reads any more: a paused producer is let go (what it pushes is dropped), so it can end.
        if (this.paused) {
          this.paused = false;
          this.flow?.resume();
        }
        this.onReturn?.();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
