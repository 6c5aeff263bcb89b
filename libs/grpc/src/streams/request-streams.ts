import { InvalidArgumentError } from '@corral/domain';

// The request side of Corral's streaming calls, which all follow one wire
// convention: a first message that opens the call (`start`, `header`), then
// either input for a running command or content chunks up to `eof`. One copy
// of each step, for every hop (gateway, scheduler, agent).

/** A ts-proto message with a `oneof kind`. */
export interface KindedMessage {
  kind?: { $case: string; value: unknown } | undefined;
}

type KindOf<M extends KindedMessage> = NonNullable<M['kind']>;
type ValueOf<M extends KindedMessage, C> = Extract<KindOf<M>, { $case: C }>['value'];

/**
 * The opening message of a request stream, which must be of kind `kind`:
 * InvalidArgument naming that field otherwise ("the first message must be
 * `description`").
 */
export async function firstMessageOf<M extends KindedMessage, C extends KindOf<M>['$case']>(
  requests: AsyncIterator<M>,
  kind: C,
  description: string,
): Promise<ValueOf<M, C>> {
  const first = await requests.next();
  if (first.done || first.value.kind?.$case !== kind) throw new InvalidArgumentError(`the first message must be ${description}`, { field: kind });
  return first.value.kind.value as ValueOf<M, C>;
}

/**
 * The content of an upload after its header: the `chunk` messages up to
 * `eof`. A stream that ends without `eof` was cut short (a cancelled call
 * ends like a finished one on the reading side), so it throws rather than
 * let a partial upload be stored as if whole. Pulled one chunk at a time:
 * the caller is held back while whatever consumes this is slow.
 */
export async function* uploadedChunks<M extends KindedMessage>(requests: AsyncIterator<M>, contentName = 'content'): AsyncGenerator<Buffer> {
  for (;;) {
    const next = await requests.next();
    if (next.done) throw new InvalidArgumentError('the upload ended before eof', { field: 'eof' });
    const kind = next.value.kind;
    if (kind?.$case === 'eof') return;
    if (kind?.$case !== 'chunk') throw new InvalidArgumentError(`only ${contentName} chunks may follow the header`, { field: 'chunk' });
    const bytes = kind.value as Uint8Array;
    // A view, not a copy: the chunk is passed on as it is.
    yield Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
}

export interface ForwardRequestsHandlers {
  /** The caller half-closed: no more input. */
  end?(): void;
  /** The request stream failed (the call was cancelled or went past its deadline) or `deliver` threw. */
  error?(err: unknown): void;
}

/**
 * Feeds the rest of a request stream to `deliver` beside the handler's own
 * output loop, one message at a time and each only after `deliver` has
 * settled, so a slow receiver holds the caller back through the call's flow
 * control. Never rejects; `handlers` learn how it ended.
 */
export async function forwardRequests<M>(requests: AsyncIterator<M>, deliver: (message: M) => unknown, handlers: ForwardRequestsHandlers = {}): Promise<void> {
  try {
    for (;;) {
      const next = await requests.next();
      if (next.done) break;
      await deliver(next.value);
    }
  } catch (err) {
    handlers.error?.(err);
    return;
  }
  handlers.end?.();
}
