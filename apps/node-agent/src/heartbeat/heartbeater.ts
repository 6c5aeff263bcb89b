import { randomUUID } from 'node:crypto';
import { Topics, type EventBus } from '@corral/events';
import type { Logger } from '@corral/logging';
import type { HostHeartbeat } from '@corral/proto';

/** What a heartbeat says besides who sends it and when. */
export type HeartbeatBody = Omit<HostHeartbeat, 'hostId' | 'bootId' | 'seq' | 'sentAt' | 'hostToken'>;

export interface HeartbeatOptions {
  bus: Pick<EventBus, 'publish'>;
  hostId: string;
  intervalMs: number;
  /** Gathers the current capacity, usage, drivers and workloads. */
  collect(): Promise<HeartbeatBody>;
  logger: Logger;
  /** The host's current JWT, read at every beat (it is refreshed while the agent runs). */
  hostToken(): string;
  /** Changes with every agent process start; random unless given. */
  bootId?: string;
  now?: () => Date;
}

export interface Heartbeater {
  readonly bootId: string;
  /** Number of the last heartbeat sent (0 before the first). */
  readonly seq: number;
  stop(): Promise<void>;
}

/**
 * Publishes HostHeartbeat on corral.hosts.<hostId>.heartbeat now and then
 * every `intervalMs`. seq grows by one per heartbeat of this boot; consumers
 * order by (bootId, seq). Beats never overlap: a slow collection delays the
 * next one instead of piling up.
 */
export function startHeartbeats(options: HeartbeatOptions): Heartbeater {
  const bootId = options.bootId ?? randomUUID();
  const now = options.now ?? (() => new Date());
  let seq = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> = Promise.resolve();

  const beat = async () => {
    try {
      const body = await options.collect();
      if (stopped) return;
      seq += 1;
      options.bus.publish(Topics.hostHeartbeat, options.hostId, { ...body, hostId: options.hostId, bootId, seq, sentAt: now(), hostToken: options.hostToken() });
    } catch (err) {
      // A missed beat is tolerated by design (the registry waits for several);
      // the next one is tried on schedule.
      options.logger.warn('heartbeat not sent', { err });
    }
  };

  const schedule = (delayMs: number) => {
    timer = setTimeout(() => {
      const started = Date.now();
      inFlight = beat().then(() => {
        if (!stopped) schedule(Math.max(0, options.intervalMs - (Date.now() - started)));
      });
    }, delayMs);
  };
  schedule(0);

  return {
    bootId,
    get seq() {
      return seq;
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await inFlight;
    },
  };
}
