import type { Driver, TaskHandle } from '../drivers/driver';

/** Bytes of a log read from an offset, and the log's size when read. */
export interface LogRange {
  data: Buffer;
  size: number;
}

/**
 * A driver whose log is an append-only file it can read from any offset:
 * what following a log needs. Drivers that can only return a tail do not
 * get a faked follow (their StreamLogs follow is a FailedPrecondition).
 */
export interface LogFollowCapability {
  /** Up to `maxBytes` from `offset`; `size` is the whole log's length (smaller than `offset` after a truncation). */
  readLogsFrom(handle: TaskHandle, options: { offset: number; maxBytes: number }): Promise<LogRange>;
}

export function canFollowLogs(driver: Driver): driver is Driver & LogFollowCapability {
  return typeof (driver as Partial<LogFollowCapability>).readLogsFrom === 'function';
}
