import { open } from 'node:fs/promises';
import type { Driver, LogChunk, TaskHandle } from '../drivers/driver';

/** Bytes of a log read from an offset, and the log's size when read. */
export interface LogRange {
  data: Buffer;
  size: number;
  /**
   * Where the next read starts, when offsets are not content bytes (a log
   * file whose records frame the output, like podman's CRI log): default
   * `offset + data.length`.
   */
  nextOffset?: number;
}

/**
 * A driver whose log is an append-only file it can read from any offset:
 * what following a log needs. Drivers that can only return a tail do not
 * get a faked follow (their StreamLogs follow is a FailedPrecondition).
 */
export interface LogFollowCapability {
  /** Up to `maxBytes` from `offset`; `size` is the whole log's length (smaller than `offset` after a truncation). */
  readLogsFrom(handle: TaskHandle, options: { offset: number; maxBytes: number }): Promise<LogRange>;
  /**
   * The last `tailBytes` of output and the offset following continues from,
   * for logs whose offsets are not content bytes. Without it following
   * starts at `size - tailBytes`.
   */
  readLogTailForFollow?(handle: TaskHandle, options: { tailBytes: number }): Promise<{ data: Buffer; nextOffset: number }>;
}

export function canFollowLogs(driver: Driver): driver is Driver & LogFollowCapability {
  return typeof (driver as Partial<LogFollowCapability>).readLogsFrom === 'function';
}

/** Up to `maxBytes` of an append-only file from `offset`; an absent file is empty. */
export async function readFileRange(path: string, options: { offset: number; maxBytes: number }): Promise<LogRange> {
  let file;
  try {
    file = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { data: Buffer.alloc(0), size: 0 };
    throw err;
  }
  try {
    const { size } = await file.stat();
    const length = Math.max(0, Math.min(size - options.offset, options.maxBytes));
    if (length === 0) return { data: Buffer.alloc(0), size };
    const data = Buffer.alloc(length);
    const { bytesRead } = await file.read(data, 0, length, options.offset);
    return { data: data.subarray(0, bytesRead), size };
  } finally {
    await file.close();
  }
}

/** The last `tailBytes` of a log file (`truncated` when it holds more); an absent file is empty. */
export async function readFileTail(path: string, tailBytes: number): Promise<LogChunk> {
  let file;
  try {
    file = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { data: Buffer.alloc(0), truncated: false };
    throw err;
  }
  try {
    const { size } = await file.stat();
    const length = Math.max(0, Math.min(size, tailBytes));
    const data = Buffer.alloc(length);
    const { bytesRead } = await file.read(data, 0, length, size - length);
    return { data: data.subarray(0, bytesRead), truncated: size > length };
  } finally {
    await file.close();
  }
}
