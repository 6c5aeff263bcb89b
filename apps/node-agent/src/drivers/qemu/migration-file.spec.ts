import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkMigrationFile, findVmDescription } from './migration-file';

/** A stream shaped like qemu's: header, some sections, QEMU_VM_EOF, then the VM description. */
function stream(body: Buffer, vmdesc = '{"page_size": 4096, "devices": []}'): Buffer {
  const header = Buffer.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);
  const json = Buffer.from(vmdesc);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(json.length);
  return Buffer.concat([header, body, Buffer.from([0x00, 0x06]), length, json]);
}

describe('migration stream check', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'corral-migration-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const file = (content: Buffer) => {
    const path = join(dir, 'snap');
    writeFileSync(path, content);
    return path;
  };

  it('accepts a whole stream', async () => {
    const whole = stream(Buffer.alloc(100_000, 7));
    expect(await checkMigrationFile(file(whole))).toEqual({ complete: true, bytes: whole.length });
  });

  it('rejects a stream cut short anywhere in its last part', async () => {
    const whole = stream(Buffer.alloc(1000, 0x06));
    for (const cut of [1, 5, 20, whole.length - 1010]) {
      const check = await checkMigrationFile(file(whole.subarray(0, whole.length - cut)));
      expect(check).toMatchObject({ complete: false, reason: expect.stringContaining('cut short') });
    }
  });

  it('rejects something that is not a migration stream', async () => {
    expect(await checkMigrationFile(file(Buffer.from('hello world, this is not qemu')))).toMatchObject({ complete: false, reason: expect.stringContaining('QEVM') });
    expect(await checkMigrationFile(file(Buffer.alloc(3)))).toMatchObject({ complete: false, reason: expect.stringContaining('too short') });
  });

  it('is not fooled by a 0x06 byte with a wrong length', () => {
    const tail = Buffer.concat([Buffer.from([0x06, 0, 0, 0, 9]), Buffer.from('{"a": 1}')]);
    expect(findVmDescription(tail)).toBe(false);
    const right = Buffer.concat([Buffer.from([0x06, 0, 0, 0, 8]), Buffer.from('{"a": 1}')]);
    expect(findVmDescription(right)).toBe(true);
  });
});
