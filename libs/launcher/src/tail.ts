import { closeSync, openSync, readSync, statSync } from 'node:fs';

/** The last `lines` lines of a file (reading at most 64 KiB), for start-up failure reports. */
export function tailFile(path: string, lines: number): string {
  try {
    const size = statSync(path).size;
    const length = Math.min(size, 64 * 1024);
    const buffer = Buffer.alloc(length);
    const fd = openSync(path, 'r');
    try {
      readSync(fd, buffer, 0, length, size - length);
    } finally {
      closeSync(fd);
    }
    return buffer.toString('utf8').split('\n').slice(-lines - 1).join('\n');
  } catch {
    return '(no log)';
  }
}
