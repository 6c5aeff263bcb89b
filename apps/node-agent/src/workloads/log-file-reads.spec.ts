import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileRange, readFileTail } from './log-follow';

// The two reads of an append-only log file every file-backed driver (process,
// qemu) answers its logs with: a tail, and a range from an offset.

describe('log file reads', () => {
  let dir: string;
  let log: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'corral-log-reads-'));
    log = join(dir, 'out.log');
    writeFileSync(log, 'hello world\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the tail, saying whether the file holds more', async () => {
    await expect(readFileTail(log, 6)).resolves.toEqual({ data: Buffer.from('world\n'), truncated: true });
    await expect(readFileTail(log, 100)).resolves.toEqual({ data: Buffer.from('hello world\n'), truncated: false });
  });

  it('reads a range from an offset with the size of the whole file, nothing past its end', async () => {
    await expect(readFileRange(log, { offset: 6, maxBytes: 3 })).resolves.toEqual({ data: Buffer.from('wor'), size: 12 });
    await expect(readFileRange(log, { offset: 20, maxBytes: 3 })).resolves.toEqual({ data: Buffer.alloc(0), size: 12 });
  });

  it('takes an absent file for an empty one', async () => {
    const absent = join(dir, 'never-written.log');
    await expect(readFileTail(absent, 10)).resolves.toEqual({ data: Buffer.alloc(0), truncated: false });
    await expect(readFileRange(absent, { offset: 0, maxBytes: 10 })).resolves.toEqual({ data: Buffer.alloc(0), size: 0 });
  });
});
