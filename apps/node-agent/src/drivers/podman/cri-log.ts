import { open } from 'node:fs/promises';
import type { LogChunk } from '../driver';

// podman's k8s-file log driver writes the CRI logging format: one record per
// line, `<RFC 3339 time> <stdout|stderr> <F|P>[:flags] <content>`, where F
// ends a line and P is part of a longer one (no line break of its own).
// Reading the file keeps stdout and stderr interleaved as conmon saw them,
// which `podman logs` cannot (it splits them over its own two streams).

const NEWLINE = 0x0a;
const SPACE = 0x20;

/** Output of the complete records in `buf`; a last record with no line break yet is left out. */
export function criContent(buf: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  for (;;) {
    const end = buf.indexOf(NEWLINE, start);
    if (end < 0) break;
    const record = criRecordContent(buf.subarray(start, end));
    if (record) parts.push(record);
    start = end + 1;
  }
  return Buffer.concat(parts);
}

function criRecordContent(line: Buffer): Buffer | undefined {
  const afterTime = line.indexOf(SPACE);
  if (afterTime < 0) return undefined;
  const afterStream = line.indexOf(SPACE, afterTime + 1);
  if (afterStream < 0) return undefined;
  let afterTag = line.indexOf(SPACE, afterStream + 1);
  if (afterTag < 0) afterTag = line.length;
  const tag = line.subarray(afterStream + 1, afterTag).toString('latin1').split(':')[0];
  const content = line.subarray(Math.min(afterTag + 1, line.length));
  if (tag === 'F') return Buffer.concat([content, Buffer.from('\n')]);
  if (tag === 'P') return content;
  return undefined;
}

export interface CriTailOptions {
  tailBytes: number;
  /** Read size when walking back through the file. Default 64 KiB. */
  chunkBytes?: number;
  /** Stops walking back after this many bytes of file (then reports truncated). Default 64 MiB. */
  maxReadBytes?: number;
}

/**
 * The last `tailBytes` of output in a CRI log file, read from its end.
 * Undefined when the file does not exist.
 */
export async function readCriLogTail(path: string, options: CriTailOptions): Promise<LogChunk | undefined> {
  const tail = await readCriLogTailWithOffset(path, options);
  return tail && { data: tail.data, truncated: tail.truncated };
}

/** The same tail, with the file offset after its last complete record: where following it continues. */
export async function readCriLogTailWithOffset(path: string, options: CriTailOptions): Promise<(LogChunk & { nextOffset: number }) | undefined> {
  const chunkBytes = options.chunkBytes ?? 64 * 1024;
  const maxReadBytes = options.maxReadBytes ?? 64 * 1024 * 1024;
  const tailBytes = Math.max(0, options.tailBytes);
  let file;
  try {
    file = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const { size } = await file.stat();
    let position = size;
    let window: Buffer = Buffer.alloc(0);
    let content: Buffer = Buffer.alloc(0);
    for (;;) {
      const length = Math.min(chunkBytes, position);
      position -= length;
      const chunk = Buffer.alloc(length);
      const { bytesRead } = await file.read(chunk, 0, length, position);
      window = Buffer.concat([chunk.subarray(0, bytesRead), window]);
      // Unless the file's start was reached, the window begins mid-record.
      const firstBreak = window.indexOf(NEWLINE);
      const complete = position === 0 ? window : firstBreak < 0 ? Buffer.alloc(0) : window.subarray(firstBreak + 1);
      content = criContent(complete);
      if (position === 0 || content.length > tailBytes || size - position >= maxReadBytes) break;
    }
    const data = content.subarray(Math.max(0, content.length - tailBytes));
    // Following continues after the last complete record read (a record still being written is read then).
    const nextOffset = position + window.lastIndexOf(NEWLINE) + 1;
    return { data: Buffer.from(data), truncated: data.length < content.length || position > 0, nextOffset: Math.max(nextOffset, position) };
  } finally {
    await file.close();
  }
}

/**
 * The output of the complete records in up to `maxBytes` of a CRI log from
 * `offset` (a record boundary: 0 or a `nextOffset` given before), and the
 * offset after them. A record not yet ended is left for the next read.
 * conmon splits long lines into partial (P) records of its 8 KiB buffer,
 * so a read of some tens of KiB always holds a whole record.
 */
export async function readCriLogFrom(path: string, options: { offset: number; maxBytes: number }): Promise<{ data: Buffer; size: number; nextOffset: number }> {
  let file;
  try {
    file = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { data: Buffer.alloc(0), size: 0, nextOffset: 0 };
    throw err;
  }
  try {
    const { size } = await file.stat();
    const length = Math.max(0, Math.min(size - options.offset, options.maxBytes));
    if (length === 0) return { data: Buffer.alloc(0), size, nextOffset: options.offset };
    const raw = Buffer.alloc(length);
    const { bytesRead } = await file.read(raw, 0, length, options.offset);
    const complete = raw.subarray(0, raw.subarray(0, bytesRead).lastIndexOf(NEWLINE) + 1);
    return { data: criContent(complete), size, nextOffset: options.offset + complete.length };
  } finally {
    await file.close();
  }
}
