import { Readable } from 'node:stream';
import { ByteReader, firstTarEntry, modeBits, parseLsLong, parseTarHeader, podmanCpInArgs, podmanCpOutArgs, podmanListDirectory, podmanRenameInside, tarFileHeader, tarTrailer } from './container-files';
import { podmanExecSessionArgs } from './commands';

const cli = { program: 'podman', globalArgs: ['--cgroup-manager', 'cgroupfs'] };

async function readAll(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of source) parts.push(p);
  return Buffer.concat(parts);
}

describe('podman file commands', () => {
  it('builds argv with the container path as data, after --', () => {
    expect(podmanCpOutArgs('abc123', '/etc/some file', cli)).toEqual(['--cgroup-manager', 'cgroupfs', 'cp', '--', 'abc123:/etc/some file', '-']);
    expect(podmanCpInArgs('abc123', '/tmp', cli)).toEqual(['--cgroup-manager', 'cgroupfs', 'cp', '--', '-', 'abc123:/tmp']);
    expect(podmanRenameInside('abc123', '/tmp/.u', '/tmp/-rf', cli).args).toEqual(['--cgroup-manager', 'cgroupfs', 'exec', '--', 'abc123', 'mv', '-f', '-T', '--', '/tmp/.u', '/tmp/-rf']);
    expect(podmanListDirectory('abc123', '/var/log', cli).args.slice(-3)).toEqual(['--full-time', '--', '/var/log/']);
    expect(podmanListDirectory('abc123', '/', cli).args.slice(-1)).toEqual(['/']);
  });

  it('builds an interactive exec with env names (never values), env file, workdir and tty', () => {
    expect(podmanExecSessionArgs('abc123', ['sh', '-c', 'echo $X'], { tty: true, envNames: ['X'], envFilePath: '/dev/shm/e/env', workingDir: '/srv' }, cli)).toEqual([
      '--cgroup-manager', 'cgroupfs', 'exec', '--interactive', '--tty', '--env', 'X', '--env-file', '/dev/shm/e/env', '--workdir', '/srv', '--', 'abc123', 'sh', '-c', 'echo $X',
    ]);
    expect(() => podmanExecSessionArgs('abc123', [], { tty: false })).toThrow(expect.objectContaining({ field: 'command' }));
    expect(() => podmanExecSessionArgs('abc123', ['ls'], { tty: false, workingDir: 'relative' })).toThrow(expect.objectContaining({ field: 'workingDir' }));
  });
});

describe('parseLsLong', () => {
  it('reads busybox and GNU long listings, with symlinks, devices and names with spaces', () => {
    const busybox = [
      'total 12',
      '-rw-r-----    1 0        0               11 2026-12-03 07:35:32 +0000 a file',
      'drwxr-xr-x    2 0        0             4096 2026-12-03 07:35:27 +0000 dir',
      'lrwxrwxrwx    1 0        0                4 2026-12-03 07:35:27 +0000 link -> /www',
      'crw-rw-rw-    1 0        0           1,   3 2026-12-03 07:35:27 +0000 null',
      'drwxrwxrwt    2 0        0             4096 2026-12-03 07:35:27 +0100 sticky',
    ].join('\n');
    expect(parseLsLong(busybox)).toEqual([
      { name: 'a file', kind: 'file', sizeBytes: 11, mode: 0o640, modifiedAt: new Date('2026-12-03T07:35:32Z') },
      { name: 'dir', kind: 'directory', sizeBytes: 4096, mode: 0o755, modifiedAt: new Date('2026-12-03T07:35:27Z') },
      { name: 'link', kind: 'symlink', sizeBytes: 4, mode: 0o777, modifiedAt: new Date('2026-12-03T07:35:27Z') },
      { name: 'null', kind: 'other', sizeBytes: 0, mode: 0o666, modifiedAt: new Date('2026-12-03T07:35:27Z') },
      { name: 'sticky', kind: 'directory', sizeBytes: 4096, mode: 0o1777, modifiedAt: new Date('2026-12-03T06:35:27Z') },
    ]);
    expect(parseLsLong('-rwsr-xr-x 1 0 0 5 2024-01-02 03:04:05.123456789 +0000 su\n')).toEqual([
      { name: 'su', kind: 'file', sizeBytes: 5, mode: 0o4755, modifiedAt: new Date('2024-01-02T03:04:05Z') },
    ]);
  });

  it('maps permission strings with special bits', () => {
    expect(modeBits('rwxr-sr-T')).toBe(0o3754);
    expect(modeBits('rw-r--r--')).toBe(0o644);
  });
});

describe('tar', () => {
  it('writes a one-file archive that its own reader (and tar) reads back', async () => {
    const content = Buffer.from('hello tar\n');
    const archive = Buffer.concat([tarFileHeader('greeting.txt', content.length, 0o640, 1_700_000_000), content, tarTrailer(content.length)]);
    expect(archive.length % 512).toBe(0);
    expect(parseTarHeader(archive.subarray(0, 512))).toEqual({ name: 'greeting.txt', type: '0', size: content.length });
    const reader = new ByteReader(Readable.from([archive.subarray(0, 100), archive.subarray(100, 700), archive.subarray(700)])[Symbol.asyncIterator]());
    const entry = await firstTarEntry(reader);
    expect(entry.kind).toBe('file');
    if (entry.kind === 'file') expect((await readAll(entry.body)).toString()).toBe('hello tar\n');
  });

  it('skips extended headers, reports directories and an empty stream', async () => {
    const pax = Buffer.from('30 path=some/very/long/name\n');
    const paxHeader = tarFileHeader('PaxHeader', pax.length, 0o644);
    paxHeader.write('x', 156);
    // The checksum is not checked by the reader.
    const dir = tarFileHeader('dir', 0, 0o755);
    dir.write('5', 156);
    const archive = Buffer.concat([paxHeader, pax, Buffer.alloc(512 - pax.length), dir, Buffer.alloc(1024)]);
    await expect(firstTarEntry(new ByteReader(Readable.from([archive])[Symbol.asyncIterator]()))).resolves.toEqual({ kind: 'directory' });
    await expect(firstTarEntry(new ByteReader(Readable.from([])[Symbol.asyncIterator]()))).resolves.toEqual({ kind: 'empty' });
  });

  it('refuses names that would not fit or that hold a slash', () => {
    expect(() => tarFileHeader('a/b', 1, 0o644)).toThrow(expect.objectContaining({ field: 'path' }));
    expect(() => tarFileHeader('x'.repeat(101), 1, 0o644)).toThrow(expect.objectContaining({ field: 'path' }));
  });
});
