// The event bus as services see it. Services depend on this interface only;
// `connectEventBus` (bus.ts) implements it on NATS and `InMemoryEventBus`
// (memory-bus.ts) implements it in-process for unit tests, so a service's
// tests do not need a broker.

import type { SubjectFamily } from './subjects';

/** Minimal logger; winston's Logger and console both satisfy it. */
export interface BusLogger {
  info(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
  error(message: string, meta?: Record<string, unknown>): void;
}

/** Turns a message into bytes and back. Decode throws on malformed input. */
export interface Codec<T> {
  encode(message: T): Uint8Array;
  decode(data: Uint8Array): T;
}

/**
 * A topic couples a family of subjects with the payload type carried on it,
 * so a publisher cannot put a WorkloadStateChanged on a heartbeat subject.
 */
export interface Topic<T> {
  /** Short name for logs, e.g. `hostHeartbeat`. */
  readonly name: string;
  readonly subjects: SubjectFamily;
  readonly codec: Codec<T>;
  /**
   * The key the message names itself (e.g. its hostId). When present, the
   * bus refuses to publish a message under another key and drops received
   * messages whose subject and body disagree, so consumers may trust either.
   */
  keyOf?(message: T): string;
}

/** Where a delivered message came from. */
export interface Delivery {
  /** The concrete subject it was published on. */
  readonly subject: string;
  /** The key token of that subject (hostId, workloadId, ...). */
  readonly key: string;
}

/**
 * Handles one decoded message. Messages of one subscription are handled one
 * at a time in arrival order; a returned promise is awaited before the next
 * message. A throw or rejection is logged and the subscription goes on.
 */
export type EventHandler<T> = (message: T, delivery: Delivery) => void | Promise<void>;

export interface SubscribeOptions {
  /**
   * Queue group: subscribers sharing a group name split the messages, each
   * message going to one of them (one replica of a service handles it).
   */
  readonly queue?: string;
  /** Subscribe to one key's subject instead of all keys of the topic. */
  readonly key?: string;
}

export interface EventSubscription {
  /** The subject or pattern subscribed to. */
  readonly subject: string;
  /** Stops delivery; messages already received are still handled. */
  unsubscribe(): void;
  /** Resolves once the subscription has stopped and its last handler returned. */
  readonly closed: Promise<void>;
}

/**
 * Connection states. `reconnecting` is reported for each reconnect attempt
 * while disconnected; `closed` is final.
 */
export type BusStatus = 'connected' | 'disconnected' | 'reconnecting' | 'closed';

export type StatusListener = (status: BusStatus, detail?: string) => void;

export interface EventBus {
  /** Current connection state. */
  readonly status: BusStatus;
  /**
   * Encodes and publishes `message` on the topic's subject for `key`.
   * Throws InvalidSubjectTokenError for a bad key and EventBusError when the
   * message names another key or the bus is closed. While disconnected,
   * messages are buffered by the client and sent after reconnecting.
   */
  publish<T>(topic: Topic<T>, key: string, message: T): void;
  /** Subscribes to every key of the topic (or one key, see options). */
  subscribe<T>(topic: Topic<T>, handler: EventHandler<T>, options?: SubscribeOptions): EventSubscription;
  /** Resolves when everything published so far has reached the broker. */
  flush(): Promise<void>;
  /** Stops subscriptions, handles what they already received, flushes, closes. */
  drain(): Promise<void>;
  /** Closes at once; buffered outgoing messages may be lost. Idempotent. */
  close(): Promise<void>;
  /** Registers a status listener; returns a function that removes it. */
  onStatus(listener: StatusListener): () => void;
}

export type EventBusErrorCode = 'KEY_MISMATCH' | 'CLOSED' | 'ENCODE_FAILED';

/** Errors raised by a bus for misuse (not for transport trouble). */
export class EventBusError extends Error {
  constructor(
    readonly code: EventBusErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'EventBusError';
  }
}
