// EventBus on NATS core (the `nats` client). This file and embedded/ tests
// are the only places that touch the nats package (eslint enforces it).
//
// Delivery is NATS core: at most once, no persistence. Consumers therefore
// order and de-duplicate with sequence numbers (see ordering.ts) and treat a
// missed message as something the next heartbeat or a reconcile pass fixes.

import { connect, DebugEvents, Events, type NatsConnection, type Status } from 'nats';
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
import { loadNatsTls, type NatsTlsOptions } from './tls/nats-tls';

export interface ReconnectBackoff {
  /** First retry delay. Default 250 ms. */
  readonly minDelayMs?: number;
  /** Longest delay between attempts. Default 10 s. */
  readonly maxDelayMs?: number;
}

export interface EventBusOptions {
  /** One NATS URL or several of one cluster, e.g. `nats://127.0.0.1:4222`. */
  readonly url: string | readonly string[];
  /** Connection name shown by the server (`corral-host-registry`, ...). */
  readonly name: string;
  readonly logger?: BusLogger;
  /**
   * When false (default) connectEventBus rejects if the first connection
   * fails, so a misconfigured URL is reported at start-up. When true it
   * keeps retrying with backoff until the server is reachable.
   */
  readonly waitForFirstConnect?: boolean;
  readonly reconnect?: ReconnectBackoff;
  /**
   * How often the client pings the server. A dead link is declared after
   * three unanswered pings, so this bounds how long a silently lost
   * connection goes unnoticed. Default 10 s.
   */
  readonly pingIntervalMs?: number;
  /** Timeout of each connection attempt. Default 5 s. */
  readonly connectTimeoutMs?: number;
  /**
   * TLS to the server (see tls/nats-tls.ts): the server must then offer
   * TLS, its certificate must chain to `caFile` and name the URL's host.
   */
  readonly tls?: NatsTlsOptions;
  /**
   * Prefix of every subject on the wire (see namespace.ts), so deployments
   * sharing one NATS server do not hear each other. One subject token;
   * empty or absent: the bare `corral.…` subjects.
   */
  readonly namespace?: string;
}

/**
 * The delay between reconnect attempts grows with the time spent
 * disconnected: half the elapsed time, within [min, max], with ±20% jitter
 * so that many services cut off together do not reconnect in lockstep.
 *
 * It is derived from elapsed time rather than an attempt counter because
 * the nats client calls the handler on every turn of its dial loop, also
 * while merely waiting, so counting calls would not count attempts. With
 * delay = elapsed / 2 an attempt made at time T is followed by the next at
 * about 2T: attempts at 0, min, 2·min, 4·min, ... until max.
 */
export function backoffDelay(elapsedMs: number, backoff: ReconnectBackoff = {}, random = Math.random): number {
  const min = backoff.minDelayMs ?? 250;
  const max = Math.max(min, backoff.maxDelayMs ?? 10_000);
  const base = Math.min(max, Math.max(min, elapsedMs / 2));
  return Math.round(base * (0.8 + 0.4 * random()));
}

/** Connects to NATS and returns an EventBus on that connection. */
export async function connectEventBus(options: EventBusOptions): Promise<EventBus> {
  const logger = options.logger ?? consoleBusLogger;
  // Checked before connecting: a bad namespace is a configuration error.
  const namespace = subjectNamespace(options.namespace);
  // Start of the current disconnected stretch; the status loop clears it on
  // reconnect and the delay handler sets it when first called after a loss.
  let disconnectedSince: number | undefined = Date.now();
  const servers = typeof options.url === 'string' ? [options.url] : [...options.url];
  const nc = await connect({
    servers,
    name: options.name,
    // Reconnect forever: a service should outlive a NATS restart.
    maxReconnectAttempts: -1,
    waitOnFirstConnect: options.waitForFirstConnect ?? false,
    reconnectDelayHandler: () => {
      disconnectedSince ??= Date.now();
      return backoffDelay(Date.now() - disconnectedSince, options.reconnect);
    },
    pingInterval: options.pingIntervalMs ?? 10_000,
    maxPingOut: 3,
    timeout: options.connectTimeoutMs ?? 5_000,
    ...(options.tls ? { tls: loadNatsTls(options.tls) } : {}),
  });
  disconnectedSince = undefined;
  const bus = new NatsEventBus(nc, logger, namespace, () => {
    disconnectedSince = undefined;
  });
  logger.info('connected to NATS', {
    name: options.name,
    server: nc.getServer(),
    tls: options.tls !== undefined,
    namespace: namespace.name,
  });
  return bus;
}

class NatsEventBus implements EventBus {
  private current: BusStatus = 'connected';
  private readonly listeners = new Set<StatusListener>();
  private readonly loops = new Set<Promise<void>>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly logger: BusLogger,
    private readonly namespace: SubjectNamespace,
    private readonly onReconnected: () => void,
  ) {
    void this.watchStatus();
    void nc.closed().then((err) => {
      if (err) this.logger.error('NATS connection closed with an error', { error: errorText(err) });
      this.setStatus('closed');
    });
  }

  get status(): BusStatus {
    return this.current;
  }

  publish<T>(topic: Topic<T>, key: string, message: T): void {
    if (this.nc.isClosed() || this.nc.isDraining()) throw new EventBusError('CLOSED', `${topic.name}: event bus is closed`);
    const { subject, data } = encodeForPublish(topic, key, message);
    this.nc.publish(this.namespace.toWire(subject), data);
  }

  subscribe<T>(topic: Topic<T>, handler: EventHandler<T>, options: SubscribeOptions = {}): EventSubscription {
    if (this.nc.isClosed() || this.nc.isDraining()) throw new EventBusError('CLOSED', `${topic.name}: event bus is closed`);
    const subject = options.key === undefined ? topic.subjects.pattern : topic.subjects.subject(options.key);
    const queue = options.queue === undefined ? undefined : assertQueueGroup(options.queue);
    const sub = this.nc.subscribe(this.namespace.toWire(subject), queue === undefined ? {} : { queue });
    const dispatch = createDispatcher(topic, handler, this.logger);
    // One loop per subscription: messages are handled one at a time in the
    // order the server delivered them. Handlers see the logical subject.
    const loop = (async () => {
      for await (const m of sub) {
        const logical = this.namespace.fromWire(m.subject);
        if (logical !== undefined) await dispatch(logical, m.data);
      }
    })().catch((err) => {
      this.logger.error('subscription ended with an error', { topic: topic.name, subject, error: errorText(err) });
    });
    this.loops.add(loop);
    void loop.finally(() => this.loops.delete(loop));
    return {
      subject,
      unsubscribe: () => {
        if (!sub.isClosed()) sub.unsubscribe();
      },
      closed: loop,
    };
  }

  async flush(): Promise<void> {
    if (this.nc.isClosed()) throw new EventBusError('CLOSED', 'event bus is closed');
    await this.nc.flush();
  }

  async drain(): Promise<void> {
    if (!this.nc.isClosed() && !this.nc.isDraining()) await this.nc.drain();
    await Promise.all([...this.loops]);
    // The 'closed' status is set by the closed() callback registered in the
    // constructor, which runs before this await resumes: callers see it.
    await this.nc.closed();
  }

  async close(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.close();
    await this.nc.closed();
  }

  onStatus(listener: StatusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private setStatus(status: BusStatus, detail?: string): void {
    if (this.current === 'closed') return;
    this.current = status;
    for (const l of [...this.listeners]) {
      try {
        l(status, detail);
      } catch (err) {
        this.logger.error('event bus status listener failed', { status, error: errorText(err) });
      }
    }
  }

  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) this.onClientStatus(s);
  }

  private onClientStatus(s: Status): void {
    const detail = typeof s.data === 'string' ? s.data : undefined;
    switch (s.type) {
      case Events.Disconnect:
        this.logger.warn('disconnected from NATS', { server: detail });
        this.setStatus('disconnected', detail);
        break;
      case DebugEvents.Reconnecting:
        this.setStatus('reconnecting', detail);
        break;
      case Events.Reconnect:
        this.onReconnected();
        this.logger.info('reconnected to NATS', { server: detail });
        this.setStatus('connected', detail);
        break;
      case DebugEvents.StaleConnection:
        this.logger.warn('NATS connection is stale (pings unanswered)', {});
        break;
      case Events.LDM:
        this.logger.info('NATS server entering lame duck mode', { server: detail });
        break;
      case Events.Error:
        this.logger.error('NATS reported an error', { error: String(s.data) });
        break;
      default:
        break;
    }
  }
}
