import { existsSync, readFileSync } from 'node:fs';
import { chmod, copyFile, lutimes, mkdir, mkdtemp, open, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { createExecutor, execErrorFromResult, isProcessAlive, type Command, type Executor } from '@corral/exec';
import { silentLogger, type Logger } from '@corral/logging';
import { isStaticElf } from './busybox-image';

// A tiny bootable microVM for tests of the qemu driver: Debian's cloud
// kernel (taken from its .deb, never installed) and an initramfs holding a
// static busybox, the kernel's virtio and ACPI-button modules, and an init
// that brings up eth0 as 10.0.2.15/24 via 10.0.2.2 (qemu user networking),
// prints MICROVM_READY_MARKER on the serial console, serves a page holding
// MICROVM_PAGE_TEXT with busybox httpd on port 80, and powers off cleanly
// on an ACPI powerdown (busybox acpid → poweroff → busybox init's shutdown).
// When the host has qemu-ga (Debian: qemu-guest-agent), the image also
// carries it with the shared libraries it links (found by reading its ELF
// dynamic section, not by running ldd) and init keeps it running on the
// virtio-serial port named MICROVM_GUEST_AGENT_PORT, which is how the qemu
// driver runs commands and moves files inside the VM.
//
// Built once into <repo>/.cache/microvm and reused: the manifest there is
// written last, so a build cut short is simply redone. Concurrent callers
// (Jest workers, parallel projects) share one build through a lock file.
//
// Needs: apt-get/apt-cache with Debian's archive reachable (or a local
// kernel .deb), dpkg-deb, gzip, a static busybox (Debian: busybox-static),
// and cpio (GNU cpio, or busybox's own applet when cpio is not installed);
// optionally qemu-ga.

export const MICROVM_READY_MARKER = 'corral-guest-ready';
export const MICROVM_POWERDOWN_MARKER = 'corral-guest-powerdown';
export const MICROVM_PAGE_TEXT = 'corral-microvm-ok';
export const MICROVM_GUEST_HTTP_PORT = 80;
export const MICROVM_GUEST_ADDRESS = '10.0.2.15';
/** Kernel arguments the image is meant to boot with. */
export const MICROVM_KERNEL_ARGS = 'console=ttyS0 panic=-1 quiet';
/** The meta-package whose dependency names the current cloud kernel. */
export const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';

/** The virtio-serial port name qemu-ga listens on (the name QEMU's tools and libvirt use). */
export const MICROVM_GUEST_AGENT_PORT = 'org.qemu.guest_agent.0';
/** Where the image puts qemu-ga and the libraries it links. */
const GUEST_AGENT_PATH = 'sbin/qemu-ga';
const GUEST_LIBRARY_DIR = 'lib/x86_64-linux-gnu';

/** Bump when the initramfs layout or init changes: cached images are rebuilt. */
export const MICROVM_BUILDER_VERSION = 4;

/** Modules the guest needs (network, disks, the guest agent's virtio-serial port, the ACPI power button and evdev for acpid); dependencies are added. */
export const MICROVM_MODULES = ['virtio_pci', 'virtio_net', 'virtio_blk', 'virtio_console', 'button', 'evdev'];

/** Where a dynamically linked program's libraries are looked for on the build host, in order. */
export const HOST_LIBRARY_DIRS = ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'];

export interface MicrovmImage {
  kernel: string;
  initrd: string;
  /** e.g. 6.1.0-56-cloud-amd64 */
  kernelVersion: string;
  /** The .deb it came from, e.g. linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb */
  kernelDeb: string;
  /** Modules in the order init loads them. */
  modules: string[];
  kernelArgs: string;
  readyMarker: string;
  pageText: string;
  guestHttpPort: number;
  /**
   * The qemu-ga the image runs on the virtio-serial port MICROVM_GUEST_AGENT_PORT
   * (the host program it was copied from); absent when the build host had none.
   */
  guestAgent?: { from: string; port: string };
}

export interface EnsureMicrovmImageOptions {
  logger?: Logger;
  /** A kernel .deb to use instead of downloading one (also CORRAL_MICROVM_KERNEL_DEB). */
  kernelDeb?: string;
  /** A static busybox to put in the image. Default: busybox on PATH. */
  busybox?: string;
  /** The qemu-ga to put in the image. Default: qemu-ga on the search path, if any; `false` leaves it out. */
  guestAgent?: string | false;
  /** Where programs are looked up. Default: PATH plus /usr/sbin, /sbin. */
  searchPath?: string;
  /** How long to wait for another process's build. Default 10 min. */
  lockTimeoutMs?: number;
}

interface Manifest extends MicrovmImage {
  builderVersion: number;
  builtAt: string;
}

const PROGRAMS = ['apt-cache', 'apt-get', 'dpkg-deb', 'cpio', 'gzip', 'busybox', 'xz', 'zstd', 'qemu-ga'];
const MANIFEST = 'manifest.json';
const builds = new Map<string, Promise<MicrovmImage>>();

/** <repo>/.cache/microvm, the repository found by walking up to nx.json. */
export function defaultMicrovmCacheDir(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, 'nx.json'))) {
    const parent = dirname(dir);
    if (parent === dir) return resolve(process.cwd(), '.cache', 'microvm');
    dir = parent;
  }
  return join(dir, '.cache', 'microvm');
}

/**
 * The cached image, building it first if needed (at most once per cache
 * directory, across processes).
 */
export function ensureMicrovmImage(cacheDir = defaultMicrovmCacheDir(), options: EnsureMicrovmImageOptions = {}): Promise<MicrovmImage> {
  const key = resolve(cacheDir);
  let build = builds.get(key);
  if (!build) {
    build = ensureLocked(key, options);
    builds.set(key, build);
    // A failed build may be retried by a later call.
    build.catch(() => builds.delete(key));
  }
  return build;
}

/** Why the image cannot be had here, or undefined when it is cached or can be built. */
export function microvmImageUnavailableReason(
  cacheDir = defaultMicrovmCacheDir(),
  options: Pick<EnsureMicrovmImageOptions, 'busybox' | 'kernelDeb' | 'searchPath' | 'guestAgent'> = {},
): string | undefined {
  if (readManifestSync(resolve(cacheDir), options)) return undefined;
  const executor = newExecutor(silentLogger, options.searchPath);
  const missing = ['dpkg-deb', 'gzip'].filter((p) => !executor.resolve(p));
  if (!kernelDebOption(options) && !executor.resolve('apt-get')) missing.push('apt-get');
  if (!executor.resolve('cpio') && !executor.resolve('busybox')) missing.push('cpio (or busybox)');
  if (missing.length) return `cannot build the microVM test image: ${missing.join(', ')} not installed`;
  const busybox = options.busybox ?? executor.resolve('busybox');
  if (!busybox) return 'cannot build the microVM test image: no busybox (install busybox-static)';
  if (!isStaticElf(readFileSync(busybox))) return `cannot build the microVM test image: ${busybox} is not statically linked (install busybox-static)`;
  return undefined;
}

async function ensureLocked(cacheDir: string, options: EnsureMicrovmImageOptions): Promise<MicrovmImage> {
  const cached = readManifestSync(cacheDir, options);
  if (cached) return cached;
  await mkdir(cacheDir, { recursive: true });
  const release = await acquireLock(join(cacheDir, '.lock'), options.lockTimeoutMs ?? 10 * 60_000);
  try {
    // Another process may have built it while this one waited.
    return readManifestSync(cacheDir, options) ?? (await build(cacheDir, options));
  } finally {
    await release();
  }
}

function readManifestSync(cacheDir: string, options: Pick<EnsureMicrovmImageOptions, 'guestAgent' | 'searchPath'>): MicrovmImage | undefined {
  try {
    const manifest = JSON.parse(readFileSync(join(cacheDir, MANIFEST), 'utf8')) as Manifest;
    if (manifest.builderVersion !== MICROVM_BUILDER_VERSION || !existsSync(manifest.kernel) || !existsSync(manifest.initrd)) return undefined;
    // An image built without the guest agent is rebuilt once qemu-ga is installed.
    if (!manifest.guestAgent && guestAgentProgram(newExecutor(silentLogger, options.searchPath), options)) return undefined;
    // eslint-disable-next-line @typescript-eslint/no-unused-vars
    const { builderVersion, builtAt, ...image } = manifest;
    return image;
  } catch {
    return undefined;
  }
}

async function acquireLock(path: string, timeoutMs: number): Promise<() => Promise<void>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    // A lock left by a process that died mid-build (or an empty one being written).
    if (Number.isInteger(holder) && holder > 0 && !isProcessAlive(holder)) {
      await rm(path, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for another build of the microVM image (${path})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function build(cacheDir: string, options: EnsureMicrovmImageOptions): Promise<MicrovmImage> {
  const logger = options.logger ?? silentLogger;
  const executor = newExecutor(logger, options.searchPath);
  const reason = microvmImageUnavailableReason(cacheDir, options);
  if (reason) throw new Error(reason);
  const work = await mkdtemp(join(cacheDir, 'build-'));
  try {
    const deb = kernelDebOption(options) ?? (await downloadKernelDeb(executor, cacheDir, work));
    const extracted = join(work, 'deb');
    await executor.run(simpleCommand('dpkg-deb', ['-x', deb, extracted], 120_000));
    const kernel = await findKernel(extracted);
    const modules = await resolveModules(executor, kernel.modulesDir, MICROVM_MODULES, join(work, 'decompressed'));

    const root = join(work, 'root');
    const busybox = options.busybox ?? (executor.resolve('busybox') as string);
    const agentProgram = guestAgentProgram(executor, options);
    const guestAgent = agentProgram ? { program: agentProgram, libraries: await resolveSharedLibraries(agentProgram) } : undefined;
    await writeRootfs(root, { busybox, modules, guestAgent });

    const out = join(work, 'out');
    await mkdir(out);
    const cpioFile = join(out, 'initrd.cpio');
    const list = await listTree(root);
    await executor.run(cpioCommand(executor, cpioFile, list, root));
    await executor.run(simpleCommand('gzip', ['-9', '-n', '-f', cpioFile], 120_000));
    await copyFile(kernel.vmlinuz, join(out, 'vmlinuz'));

    const target = join(cacheDir, `${kernel.version}-b${MICROVM_BUILDER_VERSION}`);
    await rm(target, { recursive: true, force: true });
    await rename(out, target);
    const image: MicrovmImage = {
      kernel: join(target, 'vmlinuz'),
      initrd: join(target, 'initrd.cpio.gz'),
      kernelVersion: kernel.version,
      kernelDeb: basename(deb),
      modules: modules.map((m) => m.name),
      kernelArgs: MICROVM_KERNEL_ARGS,
      readyMarker: MICROVM_READY_MARKER,
      pageText: MICROVM_PAGE_TEXT,
      guestHttpPort: MICROVM_GUEST_HTTP_PORT,
      ...(agentProgram ? { guestAgent: { from: agentProgram, port: MICROVM_GUEST_AGENT_PORT } } : {}),
    };
    const manifest: Manifest = { ...image, builderVersion: MICROVM_BUILDER_VERSION, builtAt: new Date().toISOString() };
    const temp = join(cacheDir, `.${MANIFEST}.${process.pid}.tmp`);
    await writeFile(temp, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(temp, join(cacheDir, MANIFEST));
    logger.info('built the microVM test image', { kernelVersion: kernel.version, modules: image.modules.length, guestAgent: agentProgram ?? 'none' });
    return image;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function newExecutor(logger: Logger, searchPath?: string): Executor {
  const path = searchPath ?? [process.env.PATH ?? '', '/usr/sbin', '/sbin', '/usr/bin', '/bin'].filter(Boolean).join(':');
  return createExecutor({ allowedPrograms: PROGRAMS, logger, searchPath: path, defaultTimeoutMs: 120_000 });
}

function guestAgentProgram(executor: Executor, options: Pick<EnsureMicrovmImageOptions, 'guestAgent'>): string | undefined {
  if (options.guestAgent === false) return undefined;
  return options.guestAgent ?? executor.resolve('qemu-ga');
}

function kernelDebOption(options: Pick<EnsureMicrovmImageOptions, 'kernelDeb'>): string | undefined {
  const deb = options.kernelDeb ?? process.env.CORRAL_MICROVM_KERNEL_DEB;
  return deb ? resolve(deb) : undefined;
}

function simpleCommand(program: string, args: string[], timeoutMs: number, cwd?: string): Command<string> {
  return { program, args, parse: (stdout) => stdout, mapError: execErrorFromResult, timeoutMs, cwd };
}

/**
 * `apt-cache depends linux-image-cloud-amd64` → the versioned package, then
 * `apt-get download` it, once: the .deb is kept in <cache>/debs.
 */
async function downloadKernelDeb(executor: Executor, cacheDir: string, work: string): Promise<string> {
  const depends = await executor.run(simpleCommand('apt-cache', ['depends', KERNEL_META_PACKAGE], 60_000));
  const pkg = parseKernelPackage(depends);
  const debs = join(cacheDir, 'debs');
  await mkdir(debs, { recursive: true });
  const kept = (await readdir(debs)).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (kept) return join(debs, kept);
  const dir = join(work, 'download');
  await mkdir(dir);
  await executor.run(simpleCommand('apt-get', ['download', '-q', pkg], 10 * 60_000, dir));
  const deb = (await readdir(dir)).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download ${pkg} left no .deb`);
  await rename(join(dir, deb), join(debs, deb));
  return join(debs, deb);
}

/** The versioned kernel package the meta-package depends on, e.g. linux-image-6.1.0-56-cloud-amd64. */
export function parseKernelPackage(aptCacheDepends: string): string {
  const names = [...aptCacheDepends.matchAll(/^\s*\|?Depends:\s*(linux-image-\S+)\s*$/gm)].map((m) => m[1]).filter((n) => /^linux-image-\d/.test(n));
  if (!names.length) throw new Error(`apt-cache depends ${KERNEL_META_PACKAGE} names no versioned linux-image package`);
  return names[0];
}

async function findKernel(extracted: string): Promise<{ version: string; vmlinuz: string; modulesDir: string }> {
  const boot = join(extracted, 'boot');
  const vmlinuz = (await readdir(boot)).find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new Error('the kernel package has no boot/vmlinuz-*');
  const version = vmlinuz.slice('vmlinuz-'.length);
  for (const base of ['lib/modules', 'usr/lib/modules']) {
    const dir = join(extracted, base, version);
    if (existsSync(dir)) return { version, vmlinuz: join(boot, vmlinuz), modulesDir: dir };
  }
  throw new Error(`the kernel package has no modules for ${version}`);
}

interface ModuleFile {
  name: string;
  /** An uncompressed .ko. */
  path: string;
}

/** Finds the wanted modules and their dependencies, in load order; built-in ones are left out. */
async function resolveModules(executor: Executor, modulesDir: string, wanted: string[], scratch: string): Promise<ModuleFile[]> {
  const files = new Map<string, string>();
  for (const file of await walk(join(modulesDir, 'kernel'))) {
    const match = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/.exec(basename(file));
    if (match) files.set(moduleName(match[1]), file);
  }
  const builtin = new Set(
    (await readFile(join(modulesDir, 'modules.builtin'), 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map((line) => moduleName(basename(line).replace(/\.ko$/, ''))),
  );
  await mkdir(scratch, { recursive: true });
  const plain = new Map<string, string>();
  const ko = async (name: string): Promise<string> => {
    const existing = plain.get(name);
    if (existing) return existing;
    const file = files.get(name);
    if (!file) throw new Error(`kernel module ${name} is neither a module nor built in`);
    const path = await decompressModule(executor, file, scratch);
    plain.set(name, path);
    return path;
  };
  const deps = new Map<string, string[]>();
  const pending = [...wanted];
  while (pending.length) {
    const name = pending.shift() as string;
    if (deps.has(name) || builtin.has(name)) continue;
    const d = readModuleDepends(await readFile(await ko(name))).filter((n) => !builtin.has(n));
    deps.set(name, d);
    pending.push(...d);
  }
  const order = moduleLoadOrder(wanted.filter((n) => !builtin.has(n)), deps);
  return Promise.all(order.map(async (name) => ({ name, path: await ko(name) })));
}

async function decompressModule(executor: Executor, file: string, scratch: string): Promise<string> {
  if (file.endsWith('.ko')) return file;
  const copy = join(scratch, basename(file));
  await copyFile(file, copy);
  if (copy.endsWith('.xz')) await executor.run(simpleCommand('xz', ['-d', '-f', copy], 60_000));
  else if (copy.endsWith('.zst')) await executor.run(simpleCommand('zstd', ['-d', '-q', '-f', '--rm', copy], 60_000));
  else await executor.run(simpleCommand('gzip', ['-d', '-f', copy], 60_000));
  return copy.replace(/\.(xz|zst|gz)$/, '');
}

/** Kernel module names treat - and _ alike; the canonical form uses _. */
function moduleName(name: string): string {
  return name.replaceAll('-', '_');
}

/** The `depends=` list of a kernel module, read from its ELF .modinfo section. */
export function readModuleDepends(ko: Buffer): string[] {
  const modinfo = elfSection(ko, '.modinfo');
  if (!modinfo) throw new Error('not a kernel module: no .modinfo section');
  for (const entry of modinfo.toString('latin1').split('\0')) {
    if (entry.startsWith('depends=')) return entry.slice('depends='.length).split(',').filter(Boolean).map(moduleName);
  }
  return [];
}

/** Dependencies first, each module once, in the order first needed; throws on a cycle or an unknown module. */
export function moduleLoadOrder(wanted: string[], depends: Map<string, string[]>): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, path: string[]) => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') throw new Error(`kernel modules depend on each other in a cycle: ${[...path, name].join(' → ')}`);
    const deps = depends.get(name);
    if (!deps) throw new Error(`no dependency information for kernel module ${name}`);
    state.set(name, 'visiting');
    for (const dep of deps) visit(dep, [...path, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const name of wanted) visit(name, []);
  return order;
}

/** What the dynamic loader needs to run an ELF: its interpreter (PT_INTERP, via .interp) and DT_NEEDED libraries. */
export function readElfDynamic(elf: Buffer): { interpreter?: string; needed: string[] } {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  const interp = elfSection(elf, '.interp');
  const interpreter = interp ? interp.toString('latin1').replace(/\0.*$/s, '') : undefined;
  const dynamic = elfSection(elf, '.dynamic');
  const dynstr = elfSection(elf, '.dynstr');
  const needed: string[] = [];
  if (dynamic && dynstr) {
    // Elf64_Dyn: d_tag (8 bytes), d_val (8 bytes); DT_NULL ends the table, DT_NEEDED (1) names a library in .dynstr.
    for (let at = 0; at + 16 <= dynamic.length; at += 16) {
      const tag = dynamic.readBigInt64LE(at);
      if (tag === 0n) break;
      if (tag !== 1n) continue;
      const start = Number(dynamic.readBigUInt64LE(at + 8));
      const end = dynstr.indexOf(0, start);
      needed.push(dynstr.toString('latin1', start, end < 0 ? undefined : end));
    }
  }
  return { ...(interpreter ? { interpreter } : {}), needed };
}

/** A file the image needs for a dynamically linked program. */
export interface SharedLibrary {
  /** Where it goes in the image, relative to its root. */
  path: string;
  /** The host file (symlinks are followed when copying). */
  from: string;
}

/**
 * What `ldd` would list for `program`, by reading ELF headers instead of
 * running the loader: its interpreter at the same path, and every DT_NEEDED
 * library (recursively) found in `dirs`, placed in the image's one library
 * directory, which the guest's loader searches by default.
 */
export async function resolveSharedLibraries(program: string, dirs: readonly string[] = HOST_LIBRARY_DIRS): Promise<SharedLibrary[]> {
  const found = new Map<string, SharedLibrary>();
  const pending = [program];
  while (pending.length) {
    const file = pending.shift() as string;
    const { interpreter, needed } = readElfDynamic(await readFile(file));
    if (interpreter && !found.has(interpreter)) found.set(interpreter, { path: interpreter.replace(/^\/+/, ''), from: interpreter });
    for (const name of needed) {
      if (found.has(name)) continue;
      if (name.includes('/')) throw new Error(`${file} needs a library by path (${name}): not supported`);
      const from = dirs.map((dir) => join(dir, name)).find((candidate) => existsSync(candidate));
      if (!from) throw new Error(`${file} needs ${name}, which is in none of ${dirs.join(', ')}`);
      found.set(name, { path: `${GUEST_LIBRARY_DIR}/${name}`, from });
      pending.push(from);
    }
  }
  return [...found.values()];
}

function elfSection(elf: Buffer, wanted: string): Buffer | undefined {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return undefined; // ELF64, little-endian
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  const header = (i: number) => {
    const at = shoff + i * shentsize;
    return { name: elf.readUInt32LE(at), offset: Number(elf.readBigUInt64LE(at + 0x18)), size: Number(elf.readBigUInt64LE(at + 0x20)) };
  };
  if (shoff + shnum * shentsize > elf.length || shstrndx >= shnum) return undefined;
  const strtab = header(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const h = header(i);
    const nameStart = strtab.offset + h.name;
    const nameEnd = elf.indexOf(0, nameStart);
    if (elf.toString('latin1', nameStart, nameEnd) === wanted) return elf.subarray(h.offset, h.offset + h.size);
  }
  return undefined;
}

/** One entry of the initramfs. */
export type RootfsEntry =
  | { path: string; kind: 'dir' }
  | { path: string; kind: 'file'; content: string; mode: number }
  | { path: string; kind: 'copy'; from: string; mode: number }
  | { path: string; kind: 'symlink'; target: string };

const APPLETS = [
  'sh', 'ash', 'cat', 'echo', 'ls', 'mkdir', 'mount', 'umount', 'sleep', 'insmod', 'lsmod', 'ip', 'ifconfig', 'route', 'httpd', 'acpid', 'poweroff', 'reboot', 'halt',
  'sync', 'ps', 'dmesg', 'wget', 'uname', 'true', 'false', 'init',
  // What the qemu driver runs through the guest agent (file writes, listings, killing a timed-out command) and tests use.
  'stat', 'find', 'mv', 'rm', 'ln', 'chmod', 'kill', 'cp', 'touch', 'head', 'env', 'printf', 'test', 'wc',
];

export interface RootfsSpec {
  busybox: string;
  modules: ModuleFile[];
  /** qemu-ga and what it links. */
  guestAgent?: { program: string; libraries: SharedLibrary[] };
}

/** The whole initramfs as data: unit-tested, then written to disk. */
export function rootfsEntries(spec: RootfsSpec): RootfsEntry[] {
  const names = spec.modules.map((m) => m.name);
  const agent = spec.guestAgent;
  const libraryDirs = new Set<string>();
  for (const lib of agent?.libraries ?? []) {
    const parts = lib.path.split('/').slice(0, -1);
    parts.forEach((_, i) => libraryDirs.add(parts.slice(0, i + 1).join('/')));
  }
  const entries: RootfsEntry[] = [
    ...['bin', 'sbin', 'etc', 'etc/acpi', 'etc/acpi/PWRF', 'proc', 'sys', 'dev', 'tmp', 'run', 'var', 'var/log', 'www', 'lib', 'lib/modules'].map((path) => ({ path, kind: 'dir' as const })),
    { path: 'bin/busybox', kind: 'copy', from: spec.busybox, mode: 0o755 },
    ...APPLETS.map((applet) => ({ path: `bin/${applet}`, kind: 'symlink' as const, target: 'busybox' })),
    { path: 'sbin/init', kind: 'symlink', target: '../bin/busybox' },
    // The kernel runs /init from an initramfs: busybox's init, by its name.
    { path: 'init', kind: 'symlink', target: 'bin/busybox' },
    { path: 'etc/inittab', kind: 'file', content: inittab(agent !== undefined), mode: 0o644 },
    { path: 'etc/rc', kind: 'file', content: rcScript(names), mode: 0o755 },
    // acpid runs /etc/acpi/<event> for the power button's PWRF/00000080.
    { path: 'etc/acpi/PWRF/00000080', kind: 'file', content: POWER_BUTTON, mode: 0o755 },
    { path: 'www/index.html', kind: 'file', content: `<!doctype html><title>corral</title><p>${MICROVM_PAGE_TEXT}</p>\n`, mode: 0o644 },
    ...spec.modules.map((m) => ({ path: `lib/modules/${m.name}.ko`, kind: 'copy' as const, from: m.path, mode: 0o644 })),
  ];
  if (agent) {
    entries.push(
      ...[...libraryDirs].filter((dir) => !entries.some((e) => e.path === dir)).sort().map((path) => ({ path, kind: 'dir' as const })),
      ...agent.libraries.map((lib) => ({ path: lib.path, kind: 'copy' as const, from: lib.from, mode: 0o755 })),
      { path: GUEST_AGENT_PATH, kind: 'copy', from: agent.program, mode: 0o755 },
      { path: 'etc/guest-agent', kind: 'file', content: GUEST_AGENT_SCRIPT, mode: 0o755 },
    );
  }
  return entries;
}

/** busybox init: system setup, then acpid for the power button (and the guest agent). */
export function inittab(withGuestAgent: boolean): string {
  return [
    '# busybox init: system setup, then acpid for the power button (and the guest agent).',
    '::sysinit:/etc/rc',
    '::respawn:/bin/acpid -f -c /etc/acpi -l /dev/null',
    ...(withGuestAgent ? ['::respawn:/etc/guest-agent'] : []),
    '::shutdown:/bin/echo corral-guest-shutdown',
    '',
  ].join('\n');
}

// Respawned by init. There is no udev: the port is found by its name in
// sysfs (the host names it; the name may arrive just after the module has
// loaded, hence the retry) and linked where udev would put it.
const GUEST_AGENT_SCRIPT = `#!/bin/sh
for p in /sys/class/virtio-ports/*; do
  if [ "$(cat "$p/name" 2>/dev/null)" = ${MICROVM_GUEST_AGENT_PORT} ]; then
    mkdir -p /dev/virtio-ports
    ln -sf "../\${p##*/}" /dev/virtio-ports/${MICROVM_GUEST_AGENT_PORT}
    exec /${GUEST_AGENT_PATH} -m virtio-serial -p /dev/virtio-ports/${MICROVM_GUEST_AGENT_PORT} -f /run/qemu-ga.pid -t /run
  fi
done
# No such port yet (or qemu was started without one): look again shortly.
sleep 2
`;

const POWER_BUTTON = `#!/bin/sh
echo ${MICROVM_POWERDOWN_MARKER} > /dev/console
exec /bin/poweroff
`;

export function rcScript(modules: string[]): string {
  return `#!/bin/sh
# Corral test microVM: mount, load modules (dependencies first), network, httpd.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${modules.join(' ')}; do
  insmod /lib/modules/$m.ko || echo "corral-guest: insmod $m failed"
done
ip link set lo up
ip addr add ${MICROVM_GUEST_ADDRESS}/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
# Without -f httpd binds port ${MICROVM_GUEST_HTTP_PORT} before it backgrounds, so the marker below means it answers.
httpd -p ${MICROVM_GUEST_HTTP_PORT} -h /www
echo ${MICROVM_READY_MARKER}
`;
}

async function writeRootfs(root: string, spec: RootfsSpec): Promise<void> {
  await mkdir(root);
  for (const entry of rootfsEntries(spec)) {
    const path = join(root, entry.path);
    if (entry.kind === 'dir') await mkdir(path, { recursive: true, mode: 0o755 });
    else if (entry.kind === 'symlink') await symlink(entry.target, path);
    else {
      if (entry.kind === 'file') await writeFile(path, entry.content);
      else await copyFile(entry.from, path);
      await chmod(path, entry.mode);
    }
  }
  // Fixed times: the same inputs make the same archive.
  for (const path of await listTree(root)) await lutimes(join(root, path), 0, 0);
}

/** Every path under root, relative, parents first, sorted. */
async function listTree(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.map((e) => relative(root, join(e.parentPath ?? e.path, e.name))).sort();
}

async function walk(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath ?? e.path, e.name));
}

/** `cpio -o -H newc` of `list` (read from stdin, relative to root) into `out`: GNU cpio, or busybox's applet. */
function cpioCommand(executor: Executor, out: string, list: string[], root: string): Command<string> {
  const args = ['-o', '-H', 'newc', '-R', '0:0', '--renumber-inodes', '--ignore-devno', '-F', out];
  const gnu = executor.resolve('cpio') !== undefined;
  return {
    program: gnu ? 'cpio' : 'busybox',
    args: gnu ? args : ['cpio', ...args],
    stdin: `${list.join('\n')}\n`,
    cwd: root,
    parse: (stdout) => stdout,
    mapError: execErrorFromResult,
    timeoutMs: 120_000,
  };
}
