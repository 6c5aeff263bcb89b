import { existsSync, readFileSync } from 'node:fs';
import { createExecutor, execErrorFromResult, type Command } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { BUSYBOX_APPLETS, BUSYBOX_INDEX_HTML, buildBusyboxRootfsTar, DEFAULT_BUSYBOX_PATH, isStaticElf, writeTar } from './busybox-image';

// The ustar writer, checked against GNU tar's reading of it.

const executor = createExecutor({ allowedPrograms: ['tar'], logger: silentLogger });
const hasTar = executor.resolve('tar') !== undefined;

const tar = (args: string[], input: Buffer): Command<string> => ({
  program: 'tar',
  args,
  stdin: input,
  parse: (stdout) => stdout,
  mapError: (result) => execErrorFromResult(result),
});

describe('writeTar', () => {
  const archive = writeTar([
    { type: 'dir', path: 'bin' },
    { type: 'file', path: 'bin/tool', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
    { type: 'symlink', path: 'bin/alias', target: 'tool' },
    { type: 'dir', path: 'tmp', mode: 0o1777 },
    { type: 'file', path: `deep/${'d'.repeat(90)}/${'f'.repeat(60)}.txt`, data: Buffer.alloc(1000, 0x61) },
  ]);

  it('pads to 512-byte blocks and ends with two zero blocks', () => {
    expect(archive.length % 512).toBe(0);
    expect(archive.subarray(-1024).every((b) => b === 0)).toBe(true);
    expect(archive.subarray(257, 263).toString('latin1')).toBe('ustar\0');
  });

  (hasTar ? it : it.skip)('is read back by tar with types, modes and contents intact', async () => {
    const listing = await executor.run(tar(['-tvf', '-'], archive));
    expect(listing).toMatch(/^drwxr-xr-x root\/root\s+0 .* bin\/$/m);
    expect(listing).toMatch(/^-rwxr-xr-x root\/root\s+18 .* bin\/tool$/m);
    expect(listing).toMatch(/^lrwxrwxrwx root\/root\s+0 .* bin\/alias -> tool$/m);
    expect(listing).toMatch(/^drwxrwxrwt .* tmp\/$/m);
    expect(listing).toContain(`deep/${'d'.repeat(90)}/${'f'.repeat(60)}.txt`);
    expect(await executor.run(tar(['-xOf', '-', 'bin/tool'], archive))).toBe('#!/bin/sh\necho hi\n');
  });

  it('refuses paths ustar cannot hold', () => {
    expect(() => writeTar([{ type: 'file', path: 'x'.repeat(120), data: Buffer.alloc(0) }])).toThrow('too long');
  });
});

describe('busybox rootfs', () => {
  it('tells static from dynamic ELF binaries', () => {
    expect(isStaticElf(Buffer.from('not an elf at all, just some text padding it out to sixty-four bytes...'))).toBe(false);
    if (existsSync('/bin/ls')) expect(isStaticElf(readFileSync('/bin/ls'))).toBe(false);
  });

  (existsSync(DEFAULT_BUSYBOX_PATH) && isStaticElf(readFileSync(DEFAULT_BUSYBOX_PATH)) && hasTar ? it : it.skip)(
    'holds busybox, the applet links and the web page, reproducibly',
    async () => {
      const archive = buildBusyboxRootfsTar();
      expect(buildBusyboxRootfsTar().equals(archive)).toBe(true);
      const listing = await executor.run(tar(['-tvf', '-'], archive));
      expect(listing).toMatch(/^-rwxr-xr-x .* bin\/busybox$/m);
      for (const applet of ['sh', 'httpd', 'sleep', 'echo', 'cat']) {
        expect(BUSYBOX_APPLETS).toContain(applet);
        expect(listing).toContain(`bin/${applet} -> busybox`);
      }
      expect(await executor.run(tar(['-xOf', '-', 'www/index.html'], archive))).toBe(BUSYBOX_INDEX_HTML);
    },
  );

  it('says which package is missing when busybox is not static', () => {
    expect(() => buildBusyboxRootfsTar(existsSync('/bin/ls') ? '/bin/ls' : __filename)).toThrow('busybox-static');
  });
});
