import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, execErrorFromResult } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { MICROVM_READY_MARKER, defaultMicrovmCacheDir, ensureMicrovmImage, microvmImageUnavailableReason } from './microvm-image';

// Builds the real image (Debian kernel .deb, busybox, cpio, gzip) and looks
// inside it. The default cache is shared with the qemu driver's tests.

const reason = microvmImageUnavailableReason();
if (reason) console.log(`[skip] microVM image build: ${reason}`);
const describeIfBuildable = reason ? describe.skip : describe;

const executor = createExecutor({ allowedPrograms: ['busybox', 'gzip'], logger: silentLogger, searchPath: `${process.env.PATH}:/usr/bin:/bin` });

/** Names in a gzip'ed newc archive, listed by busybox cpio (reads stdin, so gunzip first). */
async function listArchive(initrd: string, scratch: string): Promise<string[]> {
  const copy = join(scratch, 'list.cpio.gz');
  writeFileSync(copy, readFileSync(initrd));
  await executor.run({ program: 'gzip', args: ['-d', '-f', copy], parse: () => undefined, mapError: execErrorFromResult });
  return executor.run({
    program: 'busybox',
    args: ['cpio', '-t', '-F', copy.replace(/\.gz$/, '')],
    parse: (stdout) => stdout.split('\n').filter(Boolean),
    mapError: execErrorFromResult,
  });
}

describeIfBuildable('microVM image (real build)', () => {
  jest.setTimeout(10 * 60_000);
  let scratch: string;

  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), 'corral-microvm-int-'));
  });
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it('builds a kernel and an initramfs with busybox, init and the virtio modules, once', async () => {
    const [a, b] = await Promise.all([ensureMicrovmImage(), ensureMicrovmImage()]);
    expect(a).toBe(b);
    expect(a.kernel.startsWith(defaultMicrovmCacheDir())).toBe(true);
    expect(statSync(a.kernel).size).toBeGreaterThan(1_000_000);
    expect(readFileSync(a.initrd).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(a.modules.slice(0, 5)).toContain('virtio_ring');
    expect(a.modules.indexOf('virtio_ring')).toBeLessThan(a.modules.indexOf('virtio_net'));
    expect(a.modules.indexOf('net_failover')).toBeLessThan(a.modules.indexOf('virtio_net'));
    expect(a.readyMarker).toBe(MICROVM_READY_MARKER);

    const names = await listArchive(a.initrd, scratch);
    expect(names).toEqual(expect.arrayContaining(['init', 'bin/busybox', 'etc/rc', 'etc/inittab', 'www/index.html', 'lib/modules/virtio_net.ko', 'lib/modules/button.ko']));
    expect(a.modules).toContain('virtio_console');
    if (a.guestAgent) {
      // qemu-ga with its loader and libraries (the qemu driver's tests run it in a VM).
      expect(names).toEqual(expect.arrayContaining(['sbin/qemu-ga', 'etc/guest-agent', 'lib64/ld-linux-x86-64.so.2', 'lib/x86_64-linux-gnu/libc.so.6', 'lib/x86_64-linux-gnu/libglib-2.0.so.0']));
    }

    const manifest = readFileSync(join(defaultMicrovmCacheDir(), 'manifest.json'), 'utf8');
    // A second call (even from a fresh cache lookup) does not build again.
    await ensureMicrovmImage();
    expect(readFileSync(join(defaultMicrovmCacheDir(), 'manifest.json'), 'utf8')).toBe(manifest);
  });

  it('builds from a local .deb into another cache, past a lock left by a dead process', async () => {
    await ensureMicrovmImage();
    const debs = join(defaultMicrovmCacheDir(), 'debs');
    const deb = readdirSync(debs).find((f) => f.endsWith('.deb'));
    if (!deb) return; // a kernel .deb given through CORRAL_MICROVM_KERNEL_DEB: nothing kept to reuse
    const cache = join(scratch, 'cache');
    mkdirSync(cache);
    // pid 2^22+1 is above Linux's pid_max limit: never alive.
    writeFileSync(join(cache, '.lock'), String(4_194_305));
    const image = await ensureMicrovmImage(cache, { kernelDeb: join(debs, deb), lockTimeoutMs: 30_000 });
    expect(image.kernel.startsWith(cache)).toBe(true);
    expect(readdirSync(cache).sort()).toEqual([`${image.kernelVersion}-b${JSON.parse(readFileSync(join(cache, 'manifest.json'), 'utf8')).builderVersion}`, 'manifest.json']);
  });
});
