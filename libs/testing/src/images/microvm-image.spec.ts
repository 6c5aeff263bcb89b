import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  MICROVM_BUILDER_VERSION,
  MICROVM_GUEST_AGENT_PORT,
  MICROVM_MODULES,
  MICROVM_PAGE_TEXT,
  MICROVM_READY_MARKER,
  defaultMicrovmCacheDir,
  ensureMicrovmImage,
  inittab,
  microvmImageUnavailableReason,
  moduleLoadOrder,
  parseKernelPackage,
  rcScript,
  readElfDynamic,
  readModuleDepends,
  resolveSharedLibraries,
  rootfsEntries,
} from './microvm-image';

/** A minimal little-endian ELF64 with a section header table: a null section, .shstrtab and the given sections. */
function elfWithSections(sections: Record<string, Buffer>): Buffer {
  const names = ['', '.shstrtab', ...Object.keys(sections)];
  const shstrtab = Buffer.from(names.map((n) => `${n}\0`).join(''), 'latin1');
  const bodies = [Buffer.alloc(0), shstrtab, ...Object.values(sections)];
  const header = Buffer.alloc(64);
  header.writeUInt32BE(0x7f454c46, 0);
  header[4] = 2; // ELF64
  header[5] = 1; // little-endian
  let offset = 64;
  const offsets = bodies.map((b) => {
    const at = offset;
    offset += b.length;
    return at;
  });
  const shoff = offset;
  header.writeBigUInt64LE(BigInt(shoff), 0x28);
  header.writeUInt16LE(64, 0x3a);
  header.writeUInt16LE(bodies.length, 0x3c);
  header.writeUInt16LE(1, 0x3e);
  let nameOffset = 0;
  const shdrs = bodies.map((body, i) => {
    const sh = Buffer.alloc(64);
    sh.writeUInt32LE(nameOffset, 0);
    nameOffset += Buffer.byteLength(`${names[i]}\0`, 'latin1');
    sh.writeBigUInt64LE(BigInt(offsets[i]), 0x18);
    sh.writeBigUInt64LE(BigInt(body.length), 0x20);
    return sh;
  });
  return Buffer.concat([header, ...bodies, ...shdrs]);
}

const modinfo = (...entries: string[]) => Buffer.from(entries.map((e) => `${e}\0`).join(''), 'latin1');

describe('microVM image builder', () => {
  it('finds the versioned kernel package behind linux-image-cloud-amd64', () => {
    const output = 'linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n';
    expect(parseKernelPackage(output)).toBe('linux-image-6.1.0-56-cloud-amd64');
    expect(() => parseKernelPackage('linux-image-cloud-amd64\n  Depends: initramfs-tools\n')).toThrow(/no versioned linux-image/);
  });

  it("reads a module's dependencies from its .modinfo section", () => {
    const ko = elfWithSections({ '.text': Buffer.from('depends=decoy\0'), '.modinfo': modinfo('license=GPL', 'depends=virtio_ring,virtio,net-failover', 'name=virtio_net') });
    expect(readModuleDepends(ko)).toEqual(['virtio_ring', 'virtio', 'net_failover']);
    expect(readModuleDepends(elfWithSections({ '.modinfo': modinfo('depends=', 'name=failover') }))).toEqual([]);
    expect(() => readModuleDepends(elfWithSections({ '.text': Buffer.alloc(4) }))).toThrow(/no .modinfo/);
    expect(() => readModuleDepends(Buffer.from('not elf at all, not elf at all, not elf at all, not elf at all!!'))).toThrow();
  });

  it('orders modules dependencies first, matching what Debian 6.1 cloud kernels need', () => {
    // `modinfo -F depends` of Debian's 6.1 cloud kernel.
    const depends = new Map<string, string[]>([
      ['virtio_ring', []],
      ['virtio', ['virtio_ring']],
      ['virtio_pci_modern_dev', []],
      ['virtio_pci_legacy_dev', []],
      ['virtio_pci', ['virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio']],
      ['failover', []],
      ['net_failover', ['failover']],
      ['virtio_net', ['virtio_ring', 'virtio', 'net_failover']],
    ]);
    const order = moduleLoadOrder(['virtio_pci', 'virtio_net'], depends);
    expect(order).toEqual(['virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio', 'virtio_pci', 'failover', 'net_failover', 'virtio_net']);
    for (const [name, deps] of depends) for (const dep of deps) expect(order.indexOf(dep)).toBeLessThan(order.indexOf(name));
  });

  it('refuses dependency cycles and modules it knows nothing about', () => {
    expect(() => moduleLoadOrder(['a'], new Map([['a', ['b']], ['b', ['a']]]))).toThrow(/cycle: a → b → a/);
    expect(() => moduleLoadOrder(['a'], new Map([['a', ['missing']]]))).toThrow(/missing/);
  });

  it('writes an init that mounts, loads modules in order, configures eth0 and announces readiness after httpd', () => {
    const rc = rcScript(['virtio_ring', 'virtio', 'virtio_net']);
    expect(rc).toMatch(/^#!\/bin\/sh\n/);
    expect(rc).toContain('mount -t proc proc /proc');
    expect(rc).toContain('mount -t devtmpfs devtmpfs /dev');
    expect(rc).toContain('for m in virtio_ring virtio virtio_net; do');
    expect(rc).toContain('ip addr add 10.0.2.15/24 dev eth0');
    expect(rc).toContain('ip route add default via 10.0.2.2');
    expect(rc.indexOf('httpd -p 80 -h /www')).toBeLessThan(rc.indexOf(`echo ${MICROVM_READY_MARKER}`));
  });

  it('lays out the initramfs: busybox init as /init, acpid power button handler, the page, the modules', () => {
    const entries = rootfsEntries({ busybox: '/bin/busybox', modules: [{ name: 'virtio', path: '/m/virtio.ko' }] });
    const byPath = new Map(entries.map((e) => [e.path, e]));
    expect(byPath.get('init')).toEqual({ path: 'init', kind: 'symlink', target: 'bin/busybox' });
    expect(byPath.get('bin/busybox')).toMatchObject({ kind: 'copy', from: '/bin/busybox', mode: 0o755 });
    expect(byPath.get('etc/inittab')).toMatchObject({ kind: 'file', content: expect.stringContaining('::sysinit:/etc/rc') });
    expect(byPath.get('etc/inittab')).toMatchObject({ content: expect.stringContaining('acpid -f -c /etc/acpi') });
    expect(byPath.get('etc/acpi/PWRF/00000080')).toMatchObject({ kind: 'file', mode: 0o755, content: expect.stringContaining('poweroff') });
    expect(byPath.get('www/index.html')).toMatchObject({ content: expect.stringContaining(MICROVM_PAGE_TEXT) });
    expect(byPath.get('lib/modules/virtio.ko')).toMatchObject({ kind: 'copy', from: '/m/virtio.ko' });
    expect(byPath.get('bin/httpd')).toMatchObject({ kind: 'symlink', target: 'busybox' });
    // Every file's parent directory is in the archive too.
    for (const e of entries) {
      const parent = e.path.split('/').slice(0, -1).join('/');
      if (parent) expect(byPath.get(parent)).toMatchObject({ kind: 'dir' });
    }
  });

  it('reads the interpreter and DT_NEEDED libraries from an ELF, as ldd would list them', () => {
    const dynstr = Buffer.from('\0libfoo.so.1\0libc.so.6\0', 'latin1');
    const dynamic = Buffer.alloc(16 * 4);
    const entry = (i: number, tag: bigint, value: bigint) => {
      dynamic.writeBigInt64LE(tag, i * 16);
      dynamic.writeBigUInt64LE(value, i * 16 + 8);
    };
    entry(0, 1n, 1n); // DT_NEEDED libfoo.so.1
    entry(1, 12n, 0x1000n); // DT_INIT: not a library
    entry(2, 1n, 13n); // DT_NEEDED libc.so.6
    entry(3, 0n, 0n); // DT_NULL
    const elf = elfWithSections({ '.interp': Buffer.from('/lib64/ld-linux-x86-64.so.2\0'), '.dynamic': dynamic, '.dynstr': dynstr });
    expect(readElfDynamic(elf)).toEqual({ interpreter: '/lib64/ld-linux-x86-64.so.2', needed: ['libfoo.so.1', 'libc.so.6'] });
    // A static program: neither.
    expect(readElfDynamic(elfWithSections({ '.text': Buffer.alloc(8) }))).toEqual({ needed: [] });
    expect(() => readElfDynamic(Buffer.from('#!/bin/sh\necho not an ELF at all, just a shell script for a test\n'))).toThrow(/not an ELF/);
  });

  it('resolves the libraries of a real dynamically linked program (this node), recursively', async () => {
    const libs = await resolveSharedLibraries(process.execPath);
    const { interpreter, needed } = readElfDynamic(readFileSync(process.execPath));
    expect(libs.find((l) => l.from === interpreter)).toMatchObject({ path: (interpreter as string).slice(1) });
    for (const name of needed) expect(libs.find((l) => l.path === `lib/x86_64-linux-gnu/${name}`)?.from.endsWith(`/${name}`)).toBe(true);
    expect(libs.map((l) => l.path)).toContain('lib/x86_64-linux-gnu/libc.so.6');
    expect(new Set(libs.map((l) => l.path)).size).toBe(libs.length);
    await expect(resolveSharedLibraries(process.execPath, ['/nonexistent'])).rejects.toThrow(/which is in none of \/nonexistent/);
  });

  it('adds qemu-ga, its libraries, virtio_console and an init entry that runs it on the named virtio-serial port', () => {
    expect(MICROVM_MODULES).toContain('virtio_console');
    const entries = rootfsEntries({
      busybox: '/bin/busybox',
      modules: [],
      guestAgent: {
        program: '/usr/sbin/qemu-ga',
        libraries: [
          { path: 'lib64/ld-linux-x86-64.so.2', from: '/lib64/ld-linux-x86-64.so.2' },
          { path: 'lib/x86_64-linux-gnu/libglib-2.0.so.0', from: '/lib/x86_64-linux-gnu/libglib-2.0.so.0' },
        ],
      },
    });
    const byPath = new Map(entries.map((e) => [e.path, e]));
    expect(byPath.get('sbin/qemu-ga')).toMatchObject({ kind: 'copy', from: '/usr/sbin/qemu-ga', mode: 0o755 });
    expect(byPath.get('lib64/ld-linux-x86-64.so.2')).toMatchObject({ kind: 'copy' });
    expect(byPath.get('lib/x86_64-linux-gnu/libglib-2.0.so.0')).toMatchObject({ kind: 'copy', from: '/lib/x86_64-linux-gnu/libglib-2.0.so.0' });
    expect(byPath.get('etc/inittab')).toMatchObject({ content: expect.stringContaining('::respawn:/etc/guest-agent') });
    const script = byPath.get('etc/guest-agent') as { content: string; mode: number };
    expect(script.mode).toBe(0o755);
    expect(script.content).toContain('/sys/class/virtio-ports/');
    expect(script.content).toContain(`exec /sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/${MICROVM_GUEST_AGENT_PORT}`);
    // What the qemu driver runs in the guest is there.
    for (const applet of ['stat', 'find', 'mv', 'rm', 'chmod', 'kill']) expect(byPath.get(`bin/${applet}`)).toMatchObject({ kind: 'symlink' });
    for (const e of entries) {
      const parent = e.path.split('/').slice(0, -1).join('/');
      if (parent) expect(byPath.get(parent)).toMatchObject({ kind: 'dir' });
    }
    expect(entries.filter((e) => e.path === 'lib').length).toBe(1);
    // Without an agent, init does not try to run one.
    expect(inittab(false)).not.toContain('guest-agent');
    expect(rootfsEntries({ busybox: '/bin/busybox', modules: [] }).some((e) => e.path === 'sbin/qemu-ga')).toBe(false);
  });

  it('caches under <repo>/.cache/microvm by default', () => {
    expect(defaultMicrovmCacheDir()).toMatch(/\/\.cache\/microvm$/);
    expect(existsSync(join(defaultMicrovmCacheDir(), '..', '..', 'nx.json'))).toBe(true);
  });

  it('says what is missing when the image cannot be built', () => {
    const dir = mkdtempSync(join(tmpdir(), 'corral-microvm-'));
    try {
      expect(microvmImageUnavailableReason(dir, { searchPath: join(dir, 'nothing-here') })).toMatch(/not installed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('uses an image already in the cache without any tools, and rebuilds one from an older builder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'corral-microvm-'));
    try {
      writeFileSync(join(dir, 'vmlinuz'), '');
      writeFileSync(join(dir, 'initrd'), '');
      const manifest = { builderVersion: MICROVM_BUILDER_VERSION, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd'), builtAt: 'then' };
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ ...manifest, builderVersion: MICROVM_BUILDER_VERSION - 1 }));
      expect(microvmImageUnavailableReason(dir, { searchPath: join(dir, 'nothing-here') })).toMatch(/not installed/);
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
      expect(microvmImageUnavailableReason(dir, { searchPath: join(dir, 'nothing-here') })).toBeUndefined();
      const image = await ensureMicrovmImage(dir, { searchPath: join(dir, 'nothing-here') });
      expect(image).toEqual({ kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd') });
      // An image built without the guest agent is stale once there is a qemu-ga to put in it.
      const fakeAgent = join(dir, 'qemu-ga');
      writeFileSync(fakeAgent, '', { mode: 0o755 });
      expect(microvmImageUnavailableReason(dir, { searchPath: join(dir, 'nothing-here'), guestAgent: fakeAgent })).toMatch(/not installed/);
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ ...manifest, guestAgent: { from: fakeAgent, port: MICROVM_GUEST_AGENT_PORT } }));
      expect(microvmImageUnavailableReason(dir, { searchPath: join(dir, 'nothing-here'), guestAgent: fakeAgent })).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
