// The long operations that report as they go (snapshot, image import, image
// pull) share one shape on every API: upstream and public gRPC messages with
// `oneof kind { progress; result }`, and for REST (NDJSON lines) the same as
// typed events `{"type":"progress",...}` then `{"type":"result",...}`. One
// mapping each way, for all of them.

/** A ts-proto progress message: `oneof kind { progress; result }`. */
export interface ProgressMessage<P = object, R = object> {
  kind?: { $case: 'progress'; value: P } | { $case: 'result'; value: R } | undefined;
}

type KindValue<M extends ProgressMessage, C extends 'progress' | 'result'> = Extract<NonNullable<M['kind']>, { $case: C }>['value'];

/** A progress message as the operations hand it on: its kind as `type`, beside its fields. */
export type ProgressEvent<P, R> = ({ type: 'progress' } & P) | ({ type: 'result' } & R);

/** How the fields of each kind are reshaped on the way (default: as they are). */
export interface ProgressViews<P, R, PV, RV> {
  progress(value: P): PV;
  result(value: R): RV;
}

const AS_THEY_ARE = { progress: (value: unknown) => value, result: (value: unknown) => value };

/** Upstream progress messages as events, in order; a message of neither kind is skipped. */
export async function* progressEventsOf<M extends ProgressMessage, PV extends object = KindValue<M, 'progress'>, RV extends object = KindValue<M, 'result'>>(
  messages: AsyncIterable<M>,
  views?: ProgressViews<KindValue<M, 'progress'>, KindValue<M, 'result'>, PV, RV>,
): AsyncGenerator<ProgressEvent<PV, RV>> {
  const reshape = (views ?? AS_THEY_ARE) as ProgressViews<unknown, unknown, PV, RV>;
  for await (const message of messages) {
    const kind = message.kind;
    if (kind?.$case === 'progress') yield { type: 'progress', ...reshape.progress(kind.value) };
    else if (kind?.$case === 'result') yield { type: 'result', ...reshape.result(kind.value) };
  }
}

type EventFields<E, T extends 'progress' | 'result'> = Omit<Extract<E, { type: T }>, 'type'>;

type MessageOf<PM, RM> = { kind: { $case: 'progress'; value: PM } | { $case: 'result'; value: RM } };

/** Events back as progress messages (the public gRPC API), in order, their fields as they are or reshaped by `views`. */
export function progressMessagesOf<E extends { type: 'progress' | 'result' }>(
  events: AsyncIterable<E>,
): AsyncGenerator<MessageOf<EventFields<E, 'progress'>, EventFields<E, 'result'>>>;
export function progressMessagesOf<E extends { type: 'progress' | 'result' }, PM, RM>(
  events: AsyncIterable<E>,
  views: ProgressViews<EventFields<E, 'progress'>, EventFields<E, 'result'>, PM, RM>,
): AsyncGenerator<MessageOf<PM, RM>>;
export async function* progressMessagesOf(
  events: AsyncIterable<{ type: 'progress' | 'result' }>,
  views: ProgressViews<unknown, unknown, unknown, unknown> = AS_THEY_ARE,
): AsyncGenerator<MessageOf<unknown, unknown>> {
  for await (const event of events) {
    const { type, ...fields } = event;
    if (type === 'progress') yield { kind: { $case: 'progress', value: views.progress(fields) } };
    else yield { kind: { $case: 'result', value: views.result(fields) } };
  }
}
