import { open } from 'node:fs/promises';

// Checks that a file written by `migrate exec:cat > FILE` holds a whole
// migration stream. QEMU's stream starts with the magic "QEVM" and version 3
// and, on q35 (which does not suppress it), ends with a VM description
// section: QEMU_VM_VMDESCRIPTION (0x06), a big-endian 32-bit length, and
// that many bytes of JSON. A stream cut short (qemu kills its exec child
// right after closing the pipe) lacks that ending.

const MAGIC = Buffer.from('QEVM', 'ascii');
const VERSION = 3;
const VMDESCRIPTION = 0x06;
/** The VM description is JSON of a few tens of KiB; look this far back for it. */
const TAIL_BYTES = 8 * 1024 * 1024;

export type MigrationFileCheck = { complete: true; bytes: number } | { complete: false; bytes: number; reason: string };

export async function checkMigrationFile(path: string): Promise<MigrationFileCheck> {
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    if (size < 16) return { complete: false, bytes: size, reason: 'too short to be a migration stream' };
    const head = Buffer.alloc(8);
    await file.read(head, 0, 8, 0);
    if (!head.subarray(0, 4).equals(MAGIC) || head.readUInt32BE(4) !== VERSION) {
      return { complete: false, bytes: size, reason: 'not a QEMU migration stream (no QEVM v3 header)' };
    }
    const tailLength = Math.min(size, TAIL_BYTES);
    const tail = Buffer.alloc(tailLength);
    await file.read(tail, 0, tailLength, size - tailLength);
    return findVmDescription(tail) ? { complete: true, bytes: size } : { complete: false, bytes: size, reason: 'the stream does not end with its VM description: it was cut short' };
  } finally {
    await file.close();
  }
}

/** True when `tail` (the end of a stream) ends with a VM description section. */
export function findVmDescription(tail: Buffer): boolean {
  if (tail.length < 6 || tail[tail.length - 1] !== 0x7d /* } */) return false;
  // The section is the last thing in the stream: find a 0x06 whose length
  // field reaches exactly to the end, followed by the JSON's opening brace.
  for (let p = tail.length - 6; p >= 0; p--) {
    if (tail[p] !== VMDESCRIPTION || tail[p + 5] !== 0x7b /* { */) continue;
    if (tail.readUInt32BE(p + 1) === tail.length - (p + 5)) return true;
  }
  return false;
}
