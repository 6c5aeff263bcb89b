// Publish-side encoding and subscribe-side decoding shared by every EventBus
// implementation, so the NATS bus and the in-memory bus enforce the same
// rules and only differ in transport.

import { EventBusError, type BusLogger, type EventHandler, type Topic } from './event-bus';

/** Logs to the console; used when a bus is given no logger. */
export const consoleBusLogger: BusLogger = {
  info: (message, meta) => console.info(message, meta ?? ''),
  warn: (message, meta) => console.warn(message, meta ?? ''),
  error: (message, meta) => console.error(message, meta ?? ''),
};

/** Subject and bytes for publishing `message` under `key`. */
export function encodeForPublish<T>(topic: Topic<T>, key: string, message: T): { subject: string; data: Uint8Array } {
  const subject = topic.subjects.subject(key);
  if (topic.keyOf) {
    const own = topic.keyOf(message);
    if (own !== key) {
      throw new EventBusError(
        'KEY_MISMATCH',
        `${topic.name}: message names ${topic.subjects.keyRole} ${JSON.stringify(own)} but is published under ${JSON.stringify(key)}`,
      );
    }
  }
  let data: Uint8Array;
  try {
    data = topic.codec.encode(message);
  } catch (err) {
    throw new EventBusError('ENCODE_FAILED', `${topic.name}: cannot encode message: ${errorText(err)}`);
  }
  return { subject, data };
}

/**
 * Returns a function that decodes one received message and hands it to
 * `handler`. It never throws: a message that cannot be decoded or whose
 * subject and body disagree is logged and skipped, and a failing handler is
 * logged, so one bad message cannot stop a subscription.
 */
export function createDispatcher<T>(
  topic: Topic<T>,
  handler: EventHandler<T>,
  logger: BusLogger,
): (subject: string, data: Uint8Array) => Promise<void> {
  return async (subject, data) => {
    const key = topic.subjects.keyOf(subject);
    if (key === undefined) {
      logger.warn('event on a subject outside its topic skipped', { topic: topic.name, subject });
      return;
    }
    let message: T;
    try {
      message = topic.codec.decode(data);
    } catch (err) {
      logger.warn('undecodable event skipped', { topic: topic.name, subject, bytes: data.length, error: errorText(err) });
      return;
    }
    if (topic.keyOf) {
      const own = topic.keyOf(message);
      if (own !== key) {
        logger.warn('event whose body names another key skipped', { topic: topic.name, subject, bodyKey: own });
        return;
      }
    }
    try {
      await handler(message, { subject, key });
    } catch (err) {
      logger.error('event handler failed', {
        topic: topic.name,
        subject,
        error: errorText(err),
        stack: err instanceof Error ? err.stack : undefined,
      });
    }
  };
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
