import { NotFoundError } from '@corral/domain';
import type { schedulerV1 } from '@corral/proto';
import { primed } from './primed';
import { progressEventsOf, progressMessagesOf } from './progress-events';

// The one mapping of progress streams (snapshot, image import, image pull)
// between gRPC messages and the typed events REST sends as NDJSON lines.

async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const seen: T[] = [];
  for await (const item of source) seen.push(item);
  return seen;
}

async function* of<T>(...items: T[]): AsyncGenerator<T> {
  yield* items;
}

const progress = { status: 'active', transferredBytes: 10, totalBytes: 100, remainingBytes: 90, elapsedMs: 5 };
const result = { snapshotId: 'snap-1', bytes: 100, durationMs: 42 };

describe('progress events', () => {
  it('turns messages into typed events in order, skipping a message of neither kind', async () => {
    const messages: schedulerV1.SnapshotWorkloadResponse[] = [
      { kind: { $case: 'progress', value: progress } },
      { kind: undefined },
      { kind: { $case: 'result', value: result } },
    ];
    await expect(collect(progressEventsOf(of(...messages)))).resolves.toEqual([
      { type: 'progress', ...progress },
      { type: 'result', ...result },
    ]);
  });

  it('reshapes each kind when asked to, both ways', async () => {
    const events = progressEventsOf(of<schedulerV1.SnapshotWorkloadResponse>({ kind: { $case: 'progress', value: progress } }, { kind: { $case: 'result', value: result } }), {
      progress: (p) => ({ status: p.status }),
      result: (r) => ({ snapshotId: r.snapshotId }),
    });
    const messages = await collect(progressMessagesOf(events, { progress: (p) => ({ ...p, seen: true }), result: (r) => r }));
    expect(messages).toEqual([{ kind: { $case: 'progress', value: { status: 'active', seen: true } } }, { kind: { $case: 'result', value: { snapshotId: 'snap-1' } } }]);
  });

  it('turns events back into the very messages they came from', async () => {
    const messages: schedulerV1.SnapshotWorkloadResponse[] = [{ kind: { $case: 'progress', value: progress } }, { kind: { $case: 'result', value: result } }];
    await expect(collect(progressMessagesOf(progressEventsOf(of(...messages))))).resolves.toEqual(messages);
  });
});

describe('primed', () => {
  it('fails where the caller can still answer with a status when the stream fails before its first event', async () => {
    const refused: AsyncIterable<number> = { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(new NotFoundError('workload not found')) }) };
    await expect(primed(refused)).rejects.toBeInstanceOf(NotFoundError);
  });

  it('hands on every event, the first included, and closes the source when the reader leaves', async () => {
    let closed = false;
    const source = (async function* () {
      try {
        yield* [1, 2, 3];
      } finally {
        closed = true;
      }
    })();
    const events = await primed(source);
    for await (const n of events) if (n === 2) break;
    expect(closed).toBe(true);
    await expect(collect(await primed(of(1, 2, 3)))).resolves.toEqual([1, 2, 3]);
  });
});
