import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

// The smallest image the qemu driver's unikernel mode boots: a raw disk
// whose first sector is an x86 boot sector (hand-assembled below, so no
// assembler is needed). The firmware (SeaBIOS) loads it from the virtio disk
// like any bootable image; it writes a marker to the first serial port, which
// the driver captures as the console log, then halts the CPU for good. It
// knows nothing of ACPI, so a powerdown is ignored, as by many unikernels.

export const UNIKERNEL_READY_MARKER = 'corral-unikernel-ok';

const SECTOR_BYTES = 512;
/** Where the firmware loads the boot sector (real mode, segment 0). */
const LOAD_ADDRESS = 0x7c00;
const COM1 = 0x3f8;

/**
 * 16-bit code: print the NUL-terminated message at `messageOffset` to COM1,
 * then `hlt` forever (interrupts off).
 */
function bootCode(messageOffset: number): number[] {
  const message = LOAD_ADDRESS + messageOffset;
  return [
    0xfa, //                     cli
    0xfc, //                     cld
    0x31, 0xc0, //               xor ax, ax
    0x8e, 0xd8, //               mov ds, ax
    0xbe, message & 0xff, message >> 8, // mov si, message
    0xba, COM1 & 0xff, COM1 >> 8, //       mov dx, COM1
    0xac, //               next: lodsb
    0x84, 0xc0, //               test al, al
    0x74, 0x03, //               jz halt
    0xee, //                     out dx, al
    0xeb, 0xf8, //               jmp next
    0xf4, //               halt: hlt
    0xeb, 0xfd, //               jmp halt
  ];
}
const BOOT_CODE_BYTES = bootCode(0).length;

/** A raw disk image of `sizeBytes` whose boot sector prints `message` on the serial console. */
export function unikernelDiskImage(message = UNIKERNEL_READY_MARKER, sizeBytes = 1024 * 1024): Buffer {
  const text = Buffer.from(`${message}\r\n\0`, 'latin1');
  if (BOOT_CODE_BYTES + text.length > SECTOR_BYTES - 2) throw new Error('the message does not fit in the boot sector');
  if (sizeBytes < SECTOR_BYTES || sizeBytes % SECTOR_BYTES !== 0) throw new Error('the image must be a whole number of sectors');
  const image = Buffer.alloc(sizeBytes);
  Buffer.from(bootCode(BOOT_CODE_BYTES)).copy(image, 0);
  text.copy(image, BOOT_CODE_BYTES);
  // The boot signature the firmware looks for.
  image[SECTOR_BYTES - 2] = 0x55;
  image[SECTOR_BYTES - 1] = 0xaa;
  return image;
}

/** Writes the image into `dir` (as `unikernel.img`) and returns its path. */
export function writeUnikernelImage(dir: string, message = UNIKERNEL_READY_MARKER): string {
  const path = join(dir, 'unikernel.img');
  writeFileSync(path, unikernelDiskImage(message));
  return path;
}
