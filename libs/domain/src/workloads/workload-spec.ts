import { InvalidArgumentError } from '../errors/errors';

// What a caller may ask for when creating a workload. The gateway validates
// the request shape with JSON Schema; this is the one place that enforces the
// rules every entry point (REST, gRPC, CLI) shares, so a gRPC caller cannot
// skip them.
export const WORKLOAD_DRIVERS = ['process', 'podman', 'qemu'] as const;
export type WorkloadDriver = (typeof WORKLOAD_DRIVERS)[number];

export const WORKLOAD_ROUTE_PROTOCOLS = ['tcp', 'udp'] as const;
export type WorkloadRouteProtocol = (typeof WORKLOAD_ROUTE_PROTOCOLS)[number];

export const WORKLOAD_VM_MODES = ['microvm', 'unikernel'] as const;
export type WorkloadVmMode = (typeof WORKLOAD_VM_MODES)[number];

/** A port the workload listens on; the agent gives it a host port and `$PORT_<NAME>`. */
export interface WorkloadRoute {
  name: string;
  /** The port the workload listens on (inside its sandbox). */
  port: number;
  protocol: WorkloadRouteProtocol;
}

export interface WorkloadRouteInput {
  name: string;
  port: number;
  /** Default tcp. */
  protocol?: string;
}

/** What the workload may use; absent means the driver's default. */
export interface WorkloadResources {
  vcpus?: number;
  memoryMb?: number;
}

export interface WorkloadVmInput {
  mode: string;
  kernel?: string;
  initrd?: string;
  kernelArgs?: string;
  /** microvm: a base image on the host, cloned copy-on-write into the VM's root disk. */
  rootDisk?: string;
}

export interface WorkloadVm {
  mode: WorkloadVmMode;
  kernel?: string;
  initrd?: string;
  kernelArgs?: string;
  rootDisk?: string;
}

export interface WorkloadSpecInput {
  name: string;
  driver: string;
  /** Required for the process driver; podman runs the image's own command when empty. */
  command?: string[];
  env?: Record<string, string>;
  /** podman: an image reference; qemu unikernel: a bootable image. */
  image?: string;
  resources?: WorkloadResources;
  routes?: WorkloadRouteInput[];
  /** qemu only. */
  vm?: WorkloadVmInput;
}

/** A validated spec, normalised: every list present, tcp filled in, unset optionals absent. */
export interface WorkloadSpec {
  name: string;
  driver: WorkloadDriver;
  command: string[];
  env: Record<string, string>;
  image?: string;
  resources?: WorkloadResources;
  routes: WorkloadRoute[];
  vm?: WorkloadVm;
}

export const WORKLOAD_LIMITS = {
  nameMaxLength: 63,
  commandMaxArgs: 256,
  argMaxLength: 8192,
  envMaxEntries: 256,
  envValueMaxLength: 32768,
  imageMaxLength: 1024,
  routesMaxEntries: 32,
  routeNameMaxLength: 32,
  vcpus: { min: 1, max: 64 },
  memoryMb: { min: 16, max: 1024 * 1024 },
  vmPathMaxLength: 4096,
  kernelArgsMaxLength: 4096,
} as const;

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Route names become `$PORT_<NAME>` (upper-cased, `-` → `_`). */
export const WORKLOAD_ROUTE_NAME = /^[a-z][a-z0-9-]{0,31}$/;

const invalid = (message: string, field: string) => new InvalidArgumentError(message, { field });

export function validateWorkloadSpec(input: WorkloadSpecInput): WorkloadSpec {
  if (typeof input.name !== 'string' || !NAME.test(input.name)) {
    throw invalid('name must be 1-63 lowercase letters, digits or dashes, starting and ending with a letter or digit', 'name');
  }
  if (!(WORKLOAD_DRIVERS as readonly string[]).includes(input.driver)) {
    throw invalid(`driver must be one of ${WORKLOAD_DRIVERS.join(', ')}`, 'driver');
  }
  const driver = input.driver as WorkloadDriver;
  if (input.command === undefined && driver === 'process') throw invalid('command is required for the process driver', 'command');
  const command = validateCommand(input.command ?? [], driver);
  const env = validateEnv(input.env ?? {});
  const vm = validateVm(input.vm, driver);
  const image = validateImage(input.image, driver, vm);
  const resources = validateResources(input.resources);
  const routes = validateWorkloadRoutes(input.routes ?? []);
  return {
    name: input.name,
    driver,
    command,
    env,
    ...(image !== undefined ? { image } : {}),
    ...(resources !== undefined ? { resources } : {}),
    routes,
    ...(vm !== undefined ? { vm } : {}),
  };
}

function validateCommand(command: string[], driver: WorkloadDriver): string[] {
  if (!Array.isArray(command)) throw invalid('command must be a list of strings', 'command');
  // podman falls back to the image's own command; a VM boots its kernel or image.
  if (command.length === 0 && driver === 'process') throw invalid('command must not be empty', 'command');
  if (command.length > WORKLOAD_LIMITS.commandMaxArgs) throw invalid(`command may have at most ${WORKLOAD_LIMITS.commandMaxArgs} arguments`, 'command');
  command.forEach((arg, i) => {
    if (typeof arg !== 'string') throw invalid('arguments must be strings', `command[${i}]`);
    if (i === 0 && arg.length === 0) throw invalid('the program must not be empty', 'command[0]');
    if (arg.length > WORKLOAD_LIMITS.argMaxLength) throw invalid(`argument longer than ${WORKLOAD_LIMITS.argMaxLength} characters`, `command[${i}]`);
    if (arg.includes('\0')) throw invalid('argument contains a NUL byte', `command[${i}]`);
  });
  return [...command];
}

function validateEnv(env: Record<string, string>): Record<string, string> {
  const entries = Object.entries(env);
  if (entries.length > WORKLOAD_LIMITS.envMaxEntries) throw invalid(`env may have at most ${WORKLOAD_LIMITS.envMaxEntries} entries`, 'env');
  for (const [key, value] of entries) {
    if (!ENV_KEY.test(key)) throw invalid('env names must match [A-Za-z_][A-Za-z0-9_]*', `env.${key}`);
    if (typeof value !== 'string' || value.length > WORKLOAD_LIMITS.envValueMaxLength || value.includes('\0')) {
      throw invalid(`env value must be under ${WORKLOAD_LIMITS.envValueMaxLength} characters with no NUL byte`, `env.${key}`);
    }
  }
  return { ...env };
}

function validateImage(image: string | undefined, driver: WorkloadDriver, vm: WorkloadVm | undefined): string | undefined {
  const given = image !== undefined && image !== '';
  const needed = driver === 'podman' || (driver === 'qemu' && vm?.mode === 'unikernel');
  if (!given) {
    if (needed) throw invalid(driver === 'podman' ? 'the podman driver needs an image' : 'a unikernel needs an image', 'image');
    return undefined;
  }
  if (driver === 'process') throw invalid('the process driver runs no image', 'image');
  if (driver === 'qemu' && vm?.mode === 'microvm') throw invalid('a microvm boots vm.kernel, not an image', 'image');
  if (typeof image !== 'string' || image.length > WORKLOAD_LIMITS.imageMaxLength || image.startsWith('-') || /[\s\0]/.test(image)) {
    throw invalid(`image must be at most ${WORKLOAD_LIMITS.imageMaxLength} characters, without spaces, not starting with "-"`, 'image');
  }
  return image;
}

function validateResources(resources: WorkloadResources | undefined): WorkloadResources | undefined {
  if (resources === undefined) return undefined;
  if (typeof resources !== 'object' || resources === null) throw invalid('resources must be an object', 'resources');
  const out: WorkloadResources = {};
  const { vcpus, memoryMb } = resources;
  if (vcpus !== undefined) {
    const { min, max } = WORKLOAD_LIMITS.vcpus;
    if (!Number.isInteger(vcpus) || vcpus < min || vcpus > max) throw invalid(`vcpus must be an integer from ${min} to ${max}`, 'resources.vcpus');
    out.vcpus = vcpus;
  }
  if (memoryMb !== undefined) {
    const { min, max } = WORKLOAD_LIMITS.memoryMb;
    if (!Number.isInteger(memoryMb) || memoryMb < min || memoryMb > max) {
      throw invalid(`memoryMb must be an integer from ${min} to ${max}`, 'resources.memoryMb');
    }
    out.memoryMb = memoryMb;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Route names (pattern, unique: their variables would collide otherwise),
 * ports and protocols. Errors name the field, e.g. `routes[1].port`.
 */
export function validateWorkloadRoutes(routes: readonly WorkloadRouteInput[], field = 'routes'): WorkloadRoute[] {
  if (!Array.isArray(routes)) throw invalid(`${field} must be a list`, field);
  if (routes.length > WORKLOAD_LIMITS.routesMaxEntries) throw invalid(`at most ${WORKLOAD_LIMITS.routesMaxEntries} routes`, field);
  const seen = new Set<string>();
  return routes.map((route, i) => {
    const at = `${field}[${i}]`;
    if (typeof route !== 'object' || route === null) throw invalid(`${at} must be an object`, at);
    if (typeof route.name !== 'string' || !WORKLOAD_ROUTE_NAME.test(route.name)) {
      throw invalid('route names must be 1-32 lowercase letters, digits or dashes, starting with a letter', `${at}.name`);
    }
    if (seen.has(route.name)) throw invalid(`route name ${JSON.stringify(route.name)} is used twice`, `${at}.name`);
    seen.add(route.name);
    if (!Number.isInteger(route.port) || route.port < 1 || route.port > 65535) throw invalid('port must be an integer from 1 to 65535', `${at}.port`);
    const protocol = route.protocol === undefined || route.protocol === '' ? 'tcp' : route.protocol;
    if (!(WORKLOAD_ROUTE_PROTOCOLS as readonly string[]).includes(protocol)) throw invalid(`protocol must be one of ${WORKLOAD_ROUTE_PROTOCOLS.join(', ')}`, `${at}.protocol`);
    return { name: route.name, port: route.port, protocol: protocol as WorkloadRouteProtocol };
  });
}

function validateVm(vm: WorkloadVmInput | undefined, driver: WorkloadDriver): WorkloadVm | undefined {
  if (driver !== 'qemu') {
    if (vm !== undefined) throw invalid('vm is only for the qemu driver', 'vm');
    return undefined;
  }
  if (vm === undefined || typeof vm !== 'object' || vm === null) throw invalid(`the qemu driver needs vm.mode (${WORKLOAD_VM_MODES.join(' or ')})`, 'vm.mode');
  if (!(WORKLOAD_VM_MODES as readonly string[]).includes(vm.mode)) throw invalid(`vm.mode must be one of ${WORKLOAD_VM_MODES.join(', ')}`, 'vm.mode');
  const mode = vm.mode as WorkloadVmMode;
  const path = (value: string | undefined, field: string): string | undefined => {
    if (value === undefined || value === '') return undefined;
    if (typeof value !== 'string' || value.length > WORKLOAD_LIMITS.vmPathMaxLength || value.includes('\0')) {
      throw invalid(`${field} must be a path of at most ${WORKLOAD_LIMITS.vmPathMaxLength} characters`, field);
    }
    return value;
  };
  const kernel = path(vm.kernel, 'vm.kernel');
  const initrd = path(vm.initrd, 'vm.initrd');
  if (mode === 'microvm' && kernel === undefined) throw invalid('a microvm needs vm.kernel', 'vm.kernel');
  let kernelArgs: string | undefined;
  if (vm.kernelArgs !== undefined && vm.kernelArgs !== '') {
    if (typeof vm.kernelArgs !== 'string' || vm.kernelArgs.length > WORKLOAD_LIMITS.kernelArgsMaxLength || vm.kernelArgs.includes('\0')) {
      throw invalid(`vm.kernelArgs must be at most ${WORKLOAD_LIMITS.kernelArgsMaxLength} characters`, 'vm.kernelArgs');
    }
    kernelArgs = vm.kernelArgs;
  }
  const rootDisk = path(vm.rootDisk, 'vm.rootDisk');
  if (rootDisk !== undefined && mode !== 'microvm') throw invalid('vm.rootDisk is for microvms (a unikernel boots image)', 'vm.rootDisk');
  if (rootDisk !== undefined && !rootDisk.startsWith('/')) throw invalid('vm.rootDisk must be an absolute path on the host', 'vm.rootDisk');
  return { mode, ...(kernel ? { kernel } : {}), ...(initrd ? { initrd } : {}), ...(kernelArgs ? { kernelArgs } : {}), ...(rootDisk ? { rootDisk } : {}) };
}

// The wire form of these fields is the same in every proto package that
// carries them (agent, scheduler, public api): proto3 has no "unset" for
// scalars, so '' and 0 mean "not given". These convert between the two.

export interface WireWorkloadExtras {
  image: string;
  resources: { vcpus: number; memoryMb: number } | undefined;
  routes: { name: string; port: number; protocol: string }[];
  vm: { mode: string; kernel: string; initrd: string; kernelArgs: string; rootDisk: string } | undefined;
}

/** What fromWire accepts: also a vm from before root_disk existed. */
type WireWorkloadExtrasInput = Omit<WireWorkloadExtras, 'vm'> & { vm: (Omit<NonNullable<WireWorkloadExtras['vm']>, 'rootDisk'> & { rootDisk?: string }) | undefined };

/** Wire → input for validateWorkloadSpec: '' and 0 become absent. */
export function workloadExtrasFromWire(wire: WireWorkloadExtrasInput): Pick<WorkloadSpecInput, 'image' | 'resources' | 'routes' | 'vm'> {
  const resources: WorkloadResources = {};
  if (wire.resources?.vcpus) resources.vcpus = wire.resources.vcpus;
  if (wire.resources?.memoryMb) resources.memoryMb = wire.resources.memoryMb;
  return {
    ...(wire.image ? { image: wire.image } : {}),
    ...(Object.keys(resources).length > 0 ? { resources } : {}),
    routes: wire.routes.map((r) => ({ name: r.name, port: r.port, protocol: r.protocol || 'tcp' })),
    ...(wire.vm && wire.vm.mode
      ? { vm: { mode: wire.vm.mode, kernel: wire.vm.kernel, initrd: wire.vm.initrd, kernelArgs: wire.vm.kernelArgs, ...(wire.vm.rootDisk ? { rootDisk: wire.vm.rootDisk } : {}) } }
      : {}),
  };
}

/** A validated spec's extras → wire. */
export function workloadExtrasToWire(spec: Pick<WorkloadSpec, 'image' | 'resources' | 'routes' | 'vm'>): WireWorkloadExtras {
  return {
    image: spec.image ?? '',
    resources: spec.resources ? { vcpus: spec.resources.vcpus ?? 0, memoryMb: spec.resources.memoryMb ?? 0 } : undefined,
    routes: spec.routes.map((r) => ({ name: r.name, port: r.port, protocol: r.protocol })),
    vm: spec.vm ? { mode: spec.vm.mode, kernel: spec.vm.kernel ?? '', initrd: spec.vm.initrd ?? '', kernelArgs: spec.vm.kernelArgs ?? '', rootDisk: spec.vm.rootDisk ?? '' } : undefined,
  };
}
