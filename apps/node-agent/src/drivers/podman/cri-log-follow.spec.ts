import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readCriLogFrom, readCriLogTailWithOffset } from './cri-log';

// Following a podman log reads conmon's CRI file by offset: offsets are
// record boundaries in the file, not bytes of output, and a record still
// being written is left for the next read.

const record = (stream: 'stdout' | 'stderr', tag: 'F' | 'P', content: string) => `2026-11-23T18:21:27.773911225+00:00 ${stream} ${tag} ${content}\n`;

describe('following a CRI log', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'corral-cri-follow-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the output of complete records from an offset and says where the next read starts', async () => {
    const path = join(dir, 'a.log');
    const first = record('stdout', 'F', 'one') + record('stderr', 'F', 'two');
    writeFileSync(path, first + '2026-11-23T18:21:27Z stdout F thr');
    const read = await readCriLogFrom(path, { offset: 0, maxBytes: 64 * 1024 });
    expect(read.data.toString()).toBe('one\ntwo\n');
    expect(read.nextOffset).toBe(Buffer.byteLength(first));
    // The half-written record is read once it is ended.
    appendFileSync(path, 'ee\n');
    const next = await readCriLogFrom(path, { offset: read.nextOffset, maxBytes: 64 * 1024 });
    expect(next.data.toString()).toBe('three\n');
    expect(next.nextOffset).toBe(next.size);
    // Nothing new: the offset stays.
    expect(await readCriLogFrom(path, { offset: next.nextOffset, maxBytes: 64 * 1024 })).toEqual({ data: Buffer.alloc(0), size: next.size, nextOffset: next.nextOffset });
  });

  it('joins partial records across reads and honours maxBytes without splitting a record', async () => {
    const path = join(dir, 'b.log');
    const a = record('stdout', 'P', 'hel');
    const b = record('stdout', 'F', 'lo');
    writeFileSync(path, a + b);
    const firstRead = await readCriLogFrom(path, { offset: 0, maxBytes: Buffer.byteLength(a) + 5 });
    expect(firstRead).toMatchObject({ nextOffset: Buffer.byteLength(a) });
    expect(firstRead.data.toString()).toBe('hel');
    const secondRead = await readCriLogFrom(path, { offset: firstRead.nextOffset, maxBytes: 64 * 1024 });
    expect(secondRead.data.toString()).toBe('lo\n');
  });

  it('starts a follow with the tail of the output and the offset after it', async () => {
    const path = join(dir, 'c.log');
    const lines = Array.from({ length: 100 }, (_, i) => record('stdout', 'F', `line ${i}`)).join('');
    writeFileSync(path, lines + '2026-11-23T18:21:27Z stdout F unfinished');
    const tail = await readCriLogTailWithOffset(path, { tailBytes: 16, chunkBytes: 256 });
    expect(tail?.data.toString()).toBe('line 98\nline 99\n');
    expect(tail?.nextOffset).toBe(Buffer.byteLength(lines));
  });

  it('reads a missing file as empty at offset 0', async () => {
    expect(await readCriLogFrom(join(dir, 'missing.log'), { offset: 0, maxBytes: 10 })).toEqual({ data: Buffer.alloc(0), size: 0, nextOffset: 0 });
  });
});
