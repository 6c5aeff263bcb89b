// An EventBus inside one process, for unit tests of services that publish or
// consume events. It routes with the same wildcard rules as NATS, encodes
// and decodes every message with the topic's codec (so a test exercises the
// real wire format), splits queue groups one message per member, handles the
// messages of a subscription one at a time in order, and lets a test inject
// raw bytes or simulate connection loss.
//
// Several buses can share one InMemoryEventHub, standing for several
// processes on one broker (e.g. two replicas in one queue group).

import { consoleBusLogger, createDispatcher, encodeForPublish, errorText } from './dispatch';
import {
  EventBusError,
  type BusLogger,
  type BusStatus,
  type EventBus,
  type EventHandler,
  type EventSubscription,
  type StatusListener,
  type SubscribeOptions,
  type Topic,
} from './event-bus';
import { subjectNamespace, type SubjectNamespace } from './namespace';
import { assertQueueGroup } from './subjects';
import { Sublist, isValidPublishSubject } from './sublist';

class MemorySubscription {
  private readonly pending: Array<{ subject: string; data: Uint8Array }> = [];
  private pumping = false;
  private stopped = false;
  private resolveClosed!: () => void;
  readonly closed = new Promise<void>((r) => (this.resolveClosed = r));

  constructor(
    readonly pattern: string,
    readonly queue: string | undefined,
    private readonly dispatch: (subject: string, data: Uint8Array) => Promise<void>,
    /** Told how many queued messages were handled or dropped. */
    private readonly settled: (count: number) => void,
  ) {}

  get active(): boolean {
    return !this.stopped;
  }

  enqueue(subject: string, data: Uint8Array): void {
    this.pending.push({ subject, data });
    if (!this.pumping) {
      this.pumping = true;
      void this.pump();
    }
  }

  stop(dropPending: boolean): void {
    this.stopped = true;
    if (dropPending) this.settled(this.pending.splice(0).length);
    if (!this.pumping) this.resolveClosed();
  }

  private async pump(): Promise<void> {
    // Deliver on a later turn, as a network bus would: publish returns
    // before any handler runs.
    await Promise.resolve();
    for (let next = this.pending.shift(); next; next = this.pending.shift()) {
      await this.dispatch(next.subject, next.data);
      this.settled(1);
    }
    this.pumping = false;
    if (this.stopped) this.resolveClosed();
  }
}

/** The routing table shared by in-memory buses: a broker without a network. */
export class InMemoryEventHub {
  private readonly subs = new Sublist<MemorySubscription>();
  private readonly queueTurns = new Map<string, number>();
  /** Messages queued to or being handled by a subscription. */
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];

  /** A new bus on this hub, like a new connection to a broker. */
  connect(options: { readonly logger?: BusLogger; readonly namespace?: string } = {}): InMemoryEventBus {
    return new InMemoryEventBus({ ...options, hub: this });
  }

  /**
   * Delivers raw bytes on a subject as if some process had published them,
   * e.g. to test how a consumer treats a malformed message.
   */
  injectRaw(subject: string, data: Uint8Array): void {
    if (!isValidPublishSubject(subject)) throw new RangeError(`invalid publish subject ${JSON.stringify(subject)}`);
    this.route(subject, data);
  }

  /** Resolves when no delivered message is waiting or being handled. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** @internal */
  add(sub: MemorySubscription): void {
    this.subs.insert(sub.pattern, sub);
  }

  /** @internal */
  remove(sub: MemorySubscription): void {
    this.subs.remove(sub.pattern, sub);
  }

  /** @internal */
  settle(count: number): void {
    this.inFlight -= count;
    if (this.inFlight === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** @internal */
  route(subject: string, data: Uint8Array): void {
    // Copy so a caller reusing its buffer cannot change a queued message.
    const bytes = Uint8Array.from(data);
    const groups = new Map<string, MemorySubscription[]>();
    for (const sub of this.subs.match(subject)) {
      if (!sub.active) continue;
      if (sub.queue === undefined) {
        this.deliver(sub, subject, bytes);
      } else {
        const members = groups.get(sub.queue);
        if (members) members.push(sub);
        else groups.set(sub.queue, [sub]);
      }
    }
    // Each queue group gets the message once, rotating among its members.
    for (const [queue, members] of groups) {
      const turn = this.queueTurns.get(queue) ?? 0;
      this.queueTurns.set(queue, turn + 1);
      this.deliver(members[turn % members.length], subject, bytes);
    }
  }

  private deliver(sub: MemorySubscription, subject: string, data: Uint8Array): void {
    this.inFlight++;
    sub.enqueue(subject, data);
  }
}

export interface InMemoryEventBusOptions {
  readonly logger?: BusLogger;
  /** Hub to share with other buses; a private one when omitted. */
  readonly hub?: InMemoryEventHub;
  /** As EventBusOptions.namespace: prefixes every subject on the hub. */
  readonly namespace?: string;
}

export class InMemoryEventBus implements EventBus {
  readonly hub: InMemoryEventHub;
  private readonly logger: BusLogger;
  private readonly mine = new Set<MemorySubscription>();
  private readonly listeners = new Set<StatusListener>();
  private current: BusStatus = 'connected';
  private draining = false;
  private readonly namespace: SubjectNamespace;

  constructor(options: InMemoryEventBusOptions = {}) {
    this.namespace = subjectNamespace(options.namespace);
    this.logger = options.logger ?? consoleBusLogger;
    this.hub = options.hub ?? new InMemoryEventHub();
  }

  get status(): BusStatus {
    return this.current;
  }

  publish<T>(topic: Topic<T>, key: string, message: T): void {
    this.assertOpen(topic.name);
    const { subject, data } = encodeForPublish(topic, key, message);
    this.hub.route(this.namespace.toWire(subject), data);
  }

  /** See InMemoryEventHub.injectRaw; `subject` is logical, in this bus's namespace. */
  injectRaw(subject: string, data: Uint8Array): void {
    this.assertOpen('injectRaw');
    this.hub.injectRaw(this.namespace.toWire(subject), data);
  }

  /**
   * Reports a connection state change to status listeners, so a test can
   * check how a service reacts to losing and regaining the broker.
   */
  simulateStatus(status: Exclude<BusStatus, 'closed'>, detail?: string): void {
    this.assertOpen('simulateStatus');
    this.setStatus(status, detail);
  }

  subscribe<T>(topic: Topic<T>, handler: EventHandler<T>, options: SubscribeOptions = {}): EventSubscription {
    this.assertOpen(topic.name);
    const pattern = options.key === undefined ? topic.subjects.pattern : topic.subjects.subject(options.key);
    const queue = options.queue === undefined ? undefined : assertQueueGroup(options.queue);
    const dispatch = createDispatcher(topic, handler, this.logger);
    const sub = new MemorySubscription(
      this.namespace.toWire(pattern),
      queue,
      async (wire, data) => {
        const logical = this.namespace.fromWire(wire);
        if (logical !== undefined) await dispatch(logical, data);
      },
      (n) => this.hub.settle(n),
    );
    this.hub.add(sub);
    this.mine.add(sub);
    void sub.closed.then(() => this.mine.delete(sub));
    return {
      subject: pattern,
      unsubscribe: () => this.stop(sub, false),
      closed: sub.closed,
    };
  }

  /**
   * Resolves once every message published on the hub so far has been
   * handled by its subscribers, including messages those handlers published
   * in turn. (Stronger than NATS flush, which only reaches the server; tests
   * that must also pass on NATS should wait for the effect instead.)
   */
  async flush(): Promise<void> {
    this.assertOpen('flush');
    await this.hub.idle();
  }

  async drain(): Promise<void> {
    if (this.current === 'closed' || this.draining) return;
    this.draining = true;
    const subs = [...this.mine];
    for (const s of subs) this.stop(s, false);
    await Promise.all(subs.map((s) => s.closed));
    this.setStatus('closed');
  }

  async close(): Promise<void> {
    if (this.current === 'closed') return;
    for (const s of [...this.mine]) this.stop(s, true);
    this.setStatus('closed');
  }

  onStatus(listener: StatusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private stop(sub: MemorySubscription, dropPending: boolean): void {
    if (!sub.active) return;
    this.hub.remove(sub);
    sub.stop(dropPending);
  }

  private assertOpen(what: string): void {
    if (this.current === 'closed' || this.draining) throw new EventBusError('CLOSED', `${what}: event bus is closed`);
  }

  private setStatus(status: BusStatus, detail?: string): void {
    this.current = status;
    for (const l of [...this.listeners]) {
      try {
        l(status, detail);
      } catch (err) {
        this.logger.error('event bus status listener failed', { status, error: errorText(err) });
      }
    }
  }
}

export function createInMemoryEventBus(options: InMemoryEventBusOptions = {}): InMemoryEventBus {
  return new InMemoryEventBus(options);
}
