import { unikernelDiskImage, UNIKERNEL_READY_MARKER } from './unikernel-image';

describe('unikernel test image', () => {
  it('is a raw disk with a boot sector that holds the message and the boot signature', () => {
    const image = unikernelDiskImage();
    expect(image.length).toBe(1024 * 1024);
    expect(image.readUInt16LE(510)).toBe(0xaa55);
    const sector = image.subarray(0, 512).toString('latin1');
    expect(sector).toContain(`${UNIKERNEL_READY_MARKER}\r\n\0`);
    // mov si, <message>: the address the code prints from is where the message is.
    const messageAddress = image.readUInt16LE(7);
    expect(messageAddress - 0x7c00).toBe(sector.indexOf(UNIKERNEL_READY_MARKER));
    // Everything after the first sector is empty.
    expect(image.subarray(512).every((b) => b === 0)).toBe(true);
  });

  it('refuses a message that does not fit', () => {
    expect(() => unikernelDiskImage('x'.repeat(500))).toThrow(/does not fit/);
  });
});
