import { AlreadyExistsError, ConflictError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from '@corral/domain';
import { execErrorFromResult, type Command, type ExecResult } from '@corral/exec';
import type { TaskSpec } from '../driver';
import type { ExecOutcome } from '../driver';

// Every podman call the driver makes, as data for the executor (@corral/exec):
// the argv, a parser of what podman prints and a mapper from a failed run to
// a Corral error. Nothing here runs anything, so it is all unit-testable.
//
// Env values are secrets: they never go into argv (world-readable in `ps`).
// They reach podman through its own environment with `--env NAME` (names
// only in argv; /proc/<pid>/environ is private to the user), except names
// podman itself, Go, libc or CNI plugins act on (PATH, LD_PRELOAD, TMPDIR...):
// those go through an env file the driver writes 0600 into a private temp
// dir and removes right after `podman run`. (Node gives a child's stdin as a
// socket, which podman cannot open as /dev/stdin, so stdin is no option.)

export const WORKLOAD_ID_LABEL = 'corral.workload-id';
export const CONTAINER_NAME_PREFIX = 'corral-';

/** How podman is invoked: the program (allow-listed name or path) and options every call needs on this host. */
export interface PodmanCli {
  program: string;
  /** e.g. `--cgroup-manager cgroupfs` when fingerprinting found podman needs it. */
  globalArgs: readonly string[];
}

export const DEFAULT_PODMAN_CLI: PodmanCli = { program: 'podman', globalArgs: [] };

export interface Ulimit {
  soft: number;
  hard: number;
}

/** Host-dependent settings of `podman run`, decided by the driver's fingerprint. */
export interface PodmanRunSettings {
  /** OCI runtime (`--runtime`); podman's default when undefined. */
  runtime?: string;
  /** Always set explicitly: podman's defaults exceed what these hosts permit. */
  ulimits: { nofile: Ulimit; nproc: Ulimit };
  /** Address host ports are published on. */
  hostIp: string;
  /** `--log-driver`; k8s-file lets the driver read logs with stdout and stderr interleaved. */
  logDriver?: string;
}

/** What `podman container inspect` says about one container. */
export interface ContainerInspection {
  id: string;
  name: string;
  /** podman's status: created, running, paused, stopping, stopped, exited, removing... */
  status: string;
  running: boolean;
  paused: boolean;
  exitCode: number;
  oomKilled: boolean;
  /** The runtime's error, if starting it failed. */
  error: string;
  startedAt?: string;
  finishedAt?: string;
  labels: Record<string, string>;
  logDriver?: string;
  logPath?: string;
}

/** One line of `podman ps --all --format json`. */
export interface ContainerSummary {
  id: string;
  names: string[];
  /** The `corral.workload-id` label. */
  workloadId: string | undefined;
  state: string;
  exitCode: number | undefined;
  image: string;
  /** ISO 8601. */
  createdAt: string | undefined;
  labels: Record<string, string>;
}

export interface PodmanInfo {
  /** podman's default OCI runtime, e.g. crun or runc. */
  ociRuntime: string;
  cgroupVersion: string;
  cgroupManager: string;
  rootless: boolean;
  graphDriver: string;
}

// --- errors ------------------------------------------------------------------

const NO_SUCH_CONTAINER = /no such container|no container with (?:name or )?id .* found|no such object/i;
const STATE_IMPROPER = /container state improper|can only \w+ running containers|is not running|is not paused/i;
const NAME_IN_USE = /is already in use|that name is already in use/i;
const IMAGE_MISSING = /image not known|no such image|unable to find .* in local storage/i;
const COMMAND_NOT_FOUND = /executable file not found|OCI runtime attempted to invoke a command that was not found/i;
const PORT_IN_USE = /address already in use/i;
const RLIMIT_REFUSED = /setting rlimit/i;
const PODMAN_ERROR_LINE = /^Error: /m;

/**
 * The mapping every podman call shares: a missing container is NotFound, an
 * operation in the wrong state (pausing an exited container...) a failed
 * precondition; anything else the generic ExecError (exit status and the end
 * of stderr, never argv).
 */
export function mapPodmanError(result: ExecResult, subject: string): Error {
  const cause = execErrorFromResult(result);
  if (NO_SUCH_CONTAINER.test(result.stderr)) return new NotFoundError(`container ${subject} not found`, { cause });
  if (STATE_IMPROPER.test(result.stderr)) {
    return new FailedPreconditionError(`container ${subject} is not in a state that allows this: ${podmanMessage(result.stderr)}`, { cause });
  }
  return cause;
}

/** podman's own one-line explanation (its last `Error: ...` line), shortened. */
export function podmanMessage(stderr: string): string {
  const lines = stderr.split('\n').filter((line) => line.startsWith('Error: '));
  const last = lines[lines.length - 1] ?? stderr.trim().split('\n').pop() ?? '';
  return last.replace(/^Error: /, '').slice(0, 300);
}

// --- run -------------------------------------------------------------------

const SAFE_WORKLOAD_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Longest env-file line podman reads (its scanner's 64 KiB buffer, with margin). */
const MAX_ENV_FILE_LINE_BYTES = 60_000;
/**
 * Names podman, the Go runtime, libc or the CNI plugins podman starts act on
 * themselves: they must not be put into podman's own environment, so they go
 * through the env file.
 */
const PODMAN_OWN_ENV =
  /^(?:PATH|HOME|USER|LOGNAME|SHELL|TMPDIR|TZ|LANG|LANGUAGE|TERM|NOTIFY_SOCKET|DBUS_SESSION_BUS_ADDRESS|HOSTALIASES|LOCALDOMAIN|RES_OPTIONS|GCONV_PATH|SSL_CERT_FILE|SSL_CERT_DIR|(?:HTTPS?|FTP|NO|ALL)_PROXY|(?:https?|ftp|no|all)_proxy|GOGC|GODEBUG|GOMAXPROCS|GOMEMLIMIT|GOTRACEBACK|GOTMPDIR|(?:LC|LD|XDG|CONTAINERS?|PODMAN|BUILDAH|STORAGE|REGISTRY|CONMON|MALLOC|NSS)_[A-Z0-9_]*|_[A-Z0-9_]*)$/;

export function containerName(workloadId: string): string {
  return `${CONTAINER_NAME_PREFIX}${workloadId}`;
}

/** How a workload's environment reaches the container without its values in argv. */
export interface EnvInjection {
  /** Names passed with `--env NAME`: podman copies their values from its own environment. */
  names: string[];
  /** Variables added to podman's own environment for those names. */
  processEnv: Record<string, string>;
  /** Env-file text for names podman must not see in its own environment; undefined when none. */
  envFile?: string;
}

export function envInjection(env: Record<string, string>): EnvInjection {
  const fileLines: string[] = [];
  const names: string[] = [];
  const processEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (!ENV_NAME.test(name)) throw new InvalidArgumentError('env names must match [A-Za-z_][A-Za-z0-9_]*', { field: `spec.env.${name}` });
    if (value.includes('\0')) throw new InvalidArgumentError('env values may not contain NUL bytes', { field: `spec.env.${name}` });
    if (!PODMAN_OWN_ENV.test(name)) {
      names.push(name);
      processEnv[name] = value;
      continue;
    }
    const line = `${name}=${value}`;
    // An env file holds one variable per line, read up to a 64 KiB line.
    if (/[\r\n]/.test(value) || Buffer.byteLength(line) > MAX_ENV_FILE_LINE_BYTES) {
      throw new InvalidArgumentError(`env ${name} may not hold line breaks or more than ${MAX_ENV_FILE_LINE_BYTES} bytes in a container`, { field: `spec.env.${name}` });
    }
    fileLines.push(line);
  }
  return fileLines.length ? { names, processEnv, envFile: `${fileLines.join('\n')}\n` } : { names, processEnv };
}

function checkPort(value: number, field: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new InvalidArgumentError('ports must be integers from 1 to 65535', { field });
  return value;
}

function ulimitArg(name: string, limit: Ulimit): string {
  return `${name}=${limit.soft}:${limit.hard}`;
}

/**
 * `podman run --detach ...` for a task; parses to the new container's full
 * id. `envFilePath` is where the caller has written `envInjection(spec.env).envFile`
 * (required when there is one).
 */
export function podmanRun(spec: TaskSpec, settings: PodmanRunSettings, cli: PodmanCli = DEFAULT_PODMAN_CLI, envFilePath?: string): Command<string> {
  if (!SAFE_WORKLOAD_ID.test(spec.workloadId)) {
    throw new InvalidArgumentError('workload id is not usable in a container name', { field: 'spec.workloadId' });
  }
  const image = spec.image;
  if (!image || image.startsWith('-') || /\s/.test(image)) throw new InvalidArgumentError('the podman driver needs an image reference', { field: 'spec.image' });
  const name = containerName(spec.workloadId);

  const labels: string[] = [];
  for (const [key, value] of Object.entries(spec.labels)) {
    if (key === WORKLOAD_ID_LABEL) continue; // the driver's own label wins
    if (key.length === 0 || key.includes('=')) throw new InvalidArgumentError('label names may not be empty or contain "="', { field: `spec.labels.${key}` });
    labels.push('--label', `${key}=${value}`);
  }
  labels.push('--label', `${WORKLOAD_ID_LABEL}=${spec.workloadId}`);

  const resources: string[] = [];
  const { vcpus, memoryMb } = spec.resources ?? {};
  if (vcpus !== undefined) {
    if (!Number.isFinite(vcpus) || vcpus <= 0) throw new InvalidArgumentError('vcpus must be positive', { field: 'spec.resources.vcpus' });
    resources.push('--cpus', String(vcpus));
  }
  if (memoryMb !== undefined) {
    // podman refuses less than 6 MiB.
    if (!Number.isInteger(memoryMb) || memoryMb < 6) throw new InvalidArgumentError('memoryMb must be an integer of at least 6', { field: 'spec.resources.memoryMb' });
    resources.push('--memory', `${memoryMb}m`);
  }

  const ports: string[] = [];
  (spec.ports ?? []).forEach((port, i) => {
    const host = checkPort(port.hostPort, `spec.ports[${i}].hostPort`);
    const guest = checkPort(port.guestPort, `spec.ports[${i}].guestPort`);
    if (port.protocol !== 'tcp' && port.protocol !== 'udp') throw new InvalidArgumentError('protocol must be tcp or udp', { field: `spec.ports[${i}].protocol` });
    ports.push('--publish', `${settings.hostIp}:${host}:${guest}/${port.protocol}`);
  });

  const env = envInjection(spec.env);
  if (env.envFile !== undefined && !envFilePath) throw new Error('podmanRun needs the path of the env file written for this spec');
  const envArgs = [...(env.envFile !== undefined && envFilePath ? ['--env-file', envFilePath] : []), ...env.names.flatMap((name) => ['--env', name])];
  const args = [
    ...cli.globalArgs,
    'run',
    '--detach',
    // No registry is reachable: a missing image must fail at once, not hang in a pull.
    '--pull',
    'never',
    // The task's env is complete as given: podman must not add the host's proxy variables.
    '--http-proxy=false',
    '--name',
    name,
    ...labels,
    ...(settings.runtime ? ['--runtime', settings.runtime] : []),
    '--ulimit',
    ulimitArg('nofile', settings.ulimits.nofile),
    '--ulimit',
    ulimitArg('nproc', settings.ulimits.nproc),
    ...resources,
    ...(settings.logDriver ? ['--log-driver', settings.logDriver] : []),
    ...envArgs,
    ...ports,
    '--',
    image,
    ...spec.command,
  ];
  return {
    program: cli.program,
    args,
    env: env.processEnv,
    timeoutMs: 120_000,
    parse: (stdout) => parseContainerId(stdout),
    mapError: (result) => mapRunError(result, { name, image, program: spec.command[0] }),
  };
}

export function parseContainerId(stdout: string): string {
  const id = stdout.trim().split('\n').pop()?.trim() ?? '';
  if (!/^[0-9a-f]{12,64}$/.test(id)) throw new Error('podman printed no container id');
  return id;
}

export function mapRunError(result: ExecResult, what: { name: string; image: string; program?: string }): Error {
  const cause = execErrorFromResult(result);
  const stderr = result.stderr;
  if (NAME_IN_USE.test(stderr)) return new AlreadyExistsError(`a container named ${what.name} already exists`, { cause });
  if (IMAGE_MISSING.test(stderr)) return new FailedPreconditionError(`image ${what.image} is not present on this host`, { field: 'spec.image', cause });
  if (COMMAND_NOT_FOUND.test(stderr)) {
    return new FailedPreconditionError(`cannot run ${JSON.stringify(what.program ?? "the image's command")} in the container: not found`, { field: 'spec.command[0]', cause });
  }
  if (PORT_IN_USE.test(stderr)) return new ConflictError('a host port of the task is already in use', { field: 'spec.ports', cause });
  if (RLIMIT_REFUSED.test(stderr)) return new FailedPreconditionError('the container runtime may not set the configured ulimits on this host', { cause });
  return mapPodmanError(result, what.name);
}

// --- inspect / ps --------------------------------------------------------------

/**
 * Only what the driver needs, so that the container's Config.Env (the
 * workload's secrets) is never even printed to the agent.
 */
export const INSPECT_TEMPLATE =
  '{"Id":{{json .ID}},"Name":{{json .Name}},"State":{{json .State}},"Labels":{{json .Config.Labels}},"LogConfig":{{json .HostConfig.LogConfig}} }';

export function podmanInspect(ref: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<ContainerInspection> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'container', 'inspect', '--format', INSPECT_TEMPLATE, '--', ref],
    timeoutMs: 30_000,
    parse: (stdout) => parseInspect(stdout),
    mapError: (result) => mapPodmanError(result, ref),
  };
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);
const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
const num = (value: unknown): number | undefined => (typeof value === 'number' && Number.isFinite(value) ? value : undefined);

function stringRecord(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isObject(value)) return out;
  for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out[k] = v;
  return out;
}

/** Zero time in podman's JSON means "never". */
function time(value: unknown): string | undefined {
  const s = str(value);
  return s && !s.startsWith('0001-01-01') ? s : undefined;
}

/**
 * Parses the output of `podman container inspect`: the driver's template
 * (one object) or podman's full JSON (an array of objects).
 */
export function parseInspect(stdout: string): ContainerInspection {
  let data: unknown;
  try {
    data = JSON.parse(stdout);
  } catch {
    throw new Error('podman inspect printed something that is not JSON');
  }
  const c = Array.isArray(data) ? data[0] : data;
  if (!isObject(c) || !isObject(c.State) || typeof c.Id !== 'string') throw new Error('podman inspect printed no container');
  const state = c.State;
  const config = isObject(c.Config) ? c.Config : {};
  const hostConfig = isObject(c.HostConfig) ? c.HostConfig : {};
  const logConfig = isObject(c.LogConfig) ? c.LogConfig : isObject(hostConfig.LogConfig) ? hostConfig.LogConfig : {};
  return {
    id: c.Id,
    name: str(c.Name) ?? '',
    status: str(state.Status) ?? 'unknown',
    running: state.Running === true,
    paused: state.Paused === true,
    exitCode: num(state.ExitCode) ?? 0,
    oomKilled: state.OOMKilled === true,
    error: str(state.Error) ?? '',
    startedAt: time(state.StartedAt),
    finishedAt: time(state.FinishedAt),
    labels: stringRecord(c.Labels ?? config.Labels),
    logDriver: str(logConfig.Type) || undefined,
    logPath: str(logConfig.Path) || undefined,
  };
}

/** podman statuses in which the container's processes exist (possibly frozen). */
const LIVE_STATUSES = new Set(['running', 'paused', 'stopping']);

export function isLive(status: string): boolean {
  return LIVE_STATUSES.has(status);
}

/** Statuses after the container's main process has ended. */
export function hasFinished(status: string): boolean {
  return status === 'exited' || status === 'stopped';
}

/** Every container Corral started on this host (running or not). */
export function podmanPsCorral(cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<ContainerSummary[]> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'ps', '--all', '--filter', `label=${WORKLOAD_ID_LABEL}`, '--format', 'json'],
    timeoutMs: 30_000,
    parse: (stdout) => parsePs(stdout),
    mapError: (result) => mapPodmanError(result, 'list'),
  };
}

export function parsePs(stdout: string): ContainerSummary[] {
  const text = stdout.trim();
  if (text === '') return [];
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error('podman ps printed something that is not JSON');
  }
  if (!Array.isArray(data)) throw new Error('podman ps did not print a list');
  return data.filter(isObject).flatMap((c) => {
    const id = str(c.Id);
    if (!id) return [];
    const labels = stringRecord(c.Labels);
    const created = num(c.Created);
    return [
      {
        id,
        names: Array.isArray(c.Names) ? c.Names.filter((n): n is string => typeof n === 'string') : [],
        workloadId: labels[WORKLOAD_ID_LABEL],
        state: str(c.State) ?? 'unknown',
        exitCode: num(c.ExitCode),
        image: str(c.Image) ?? '',
        createdAt: created === undefined ? undefined : new Date(created * 1000).toISOString(),
        labels,
      },
    ];
  });
}

// --- lifecycle -------------------------------------------------------------------

function simple(cli: PodmanCli, args: string[], subject: string, timeoutMs = 30_000): Command<void> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, ...args],
    timeoutMs,
    parse: () => undefined,
    mapError: (result) => mapPodmanError(result, subject),
  };
}

export function podmanKill(ref: string, signal: NodeJS.Signals, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<void> {
  if (!/^SIG[A-Z0-9]+$/.test(signal)) throw new InvalidArgumentError(`not a signal name: ${signal}`, { field: 'signal' });
  return simple(cli, ['kill', '--signal', signal, '--', ref], ref);
}

/**
 * `podman wait`: resolves with the exit code once the container has ended.
 * The executor's timeout bounds it (an ExecError with reason `timeout`).
 */
export function podmanWait(ref: string, timeoutMs: number, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<number | undefined> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'wait', '--interval', '100ms', '--', ref],
    timeoutMs: Math.max(1, timeoutMs),
    parse: (stdout) => {
      const code = Number.parseInt(stdout.trim().split('\n').pop() ?? '', 10);
      return Number.isNaN(code) ? undefined : code;
    },
    mapError: (result) => mapPodmanError(result, ref),
  };
}

/** Removes a container, killing it first if it runs. Removing a missing container succeeds. */
export function podmanRm(ref: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<void> {
  return simple(cli, ['rm', '--force', '--time', '0', '--volumes', '--', ref], ref, 60_000);
}

export function podmanPause(ref: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<void> {
  return simple(cli, ['pause', '--', ref], ref);
}

export function podmanUnpause(ref: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<void> {
  return simple(cli, ['unpause', '--', ref], ref);
}

/** A command inside the container exited non-zero: not a failure of the exec itself. */
export class ContainerCommandExit extends Error {
  override readonly name = 'ContainerCommandExit';

  constructor(readonly outcome: ExecOutcome) {
    super(`the command exited with code ${outcome.exitCode}`);
  }
}

/** `podman exec`; a non-zero exit of the command is a ContainerCommandExit carrying its output. */
export function podmanExec(
  ref: string,
  argv: readonly string[],
  options: { stdin?: string | Buffer; timeoutMs: number },
  cli: PodmanCli = DEFAULT_PODMAN_CLI,
): Command<ExecOutcome> {
  if (argv.length === 0) throw new InvalidArgumentError('exec needs a command', { field: 'argv' });
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'exec', ...(options.stdin === undefined ? [] : ['--interactive']), '--', ref, ...argv],
    stdin: options.stdin,
    timeoutMs: options.timeoutMs,
    parse: (stdout, stderr) => ({ exitCode: 0, stdout, stderr }),
    mapError: (result) => mapExecError(result, ref),
  };
}

/**
 * Arguments of an interactive `podman exec` (run with piped stdio, not
 * through the buffered executor). Env values travel like `podman run`'s: by
 * name through podman's own environment, or in an env file.
 */
export function podmanExecSessionArgs(
  ref: string,
  argv: readonly string[],
  options: { tty: boolean; envNames?: readonly string[]; envFilePath?: string; workingDir?: string; marker?: string },
  cli: PodmanCli = DEFAULT_PODMAN_CLI,
): string[] {
  if (argv.length === 0) throw new InvalidArgumentError('exec needs a command', { field: 'command' });
  const workingDir = options.workingDir;
  if (workingDir !== undefined && workingDir !== '' && (!workingDir.startsWith('/') || workingDir.includes('\0'))) {
    throw new InvalidArgumentError('workingDir must be an absolute path', { field: 'workingDir' });
  }
  return [
    ...cli.globalArgs,
    'exec',
    '--interactive',
    ...(options.tty ? ['--tty'] : []),
    // NAME=value in argv: only for the session's non-secret marker (exec-reaper.ts).
    ...(options.marker ? ['--env', options.marker] : []),
    ...(options.envNames ?? []).flatMap((name) => ['--env', name]),
    ...(options.envFilePath ? ['--env-file', options.envFilePath] : []),
    ...(workingDir ? ['--workdir', workingDir] : []),
    '--',
    ref,
    ...argv,
  ];
}

export function mapExecError(result: ExecResult, ref: string): Error {
  if (result.exitCode === null) return execErrorFromResult(result);
  // podman's own failures end its stderr with an "Error: ..." line and exit
  // 125 (or 255 for a container in the wrong state); anything else is the
  // command's own exit.
  const lastLine = result.stderr.trimEnd().split('\n').pop() ?? '';
  const podmanFailed = (result.exitCode === 125 || result.exitCode === 255) && PODMAN_ERROR_LINE.test(lastLine);
  if (podmanFailed) return mapPodmanError(result, ref);
  return new ContainerCommandExit({ exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr });
}

/** `podman logs`, used when the container's log file cannot be read directly. */
export function podmanLogs(ref: string, tailLines: number, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<Buffer> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'logs', '--tail', String(Math.max(0, Math.floor(tailLines))), '--', ref],
    timeoutMs: 30_000,
    // podman writes the container's stdout and stderr to its own two
    // streams: their interleaving is lost on this path.
    parse: (stdout, stderr) => Buffer.from(stdout + stderr),
    mapError: (result) => mapPodmanError(result, ref),
  };
}

// --- host ----------------------------------------------------------------------

export function podmanVersion(cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<string> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'version', '--format', 'json'],
    timeoutMs: 30_000,
    parse: (stdout) => parseVersion(stdout),
    mapError: (result) => execErrorFromResult(result),
  };
}

export function parseVersion(stdout: string): string {
  const data: unknown = JSON.parse(stdout);
  if (isObject(data)) {
    for (const side of [data.Client, data.Server]) {
      if (isObject(side) && typeof side.Version === 'string') return side.Version;
    }
  }
  throw new Error('podman version printed no version');
}

export function podmanInfo(cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<PodmanInfo> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'info', '--format', 'json'],
    timeoutMs: 60_000,
    parse: (stdout) => parseInfo(stdout),
    mapError: (result) => execErrorFromResult(result),
  };
}

export function parseInfo(stdout: string): PodmanInfo {
  const data: unknown = JSON.parse(stdout);
  if (!isObject(data) || !isObject(data.host)) throw new Error('podman info printed no host section');
  const host = data.host;
  const store = isObject(data.store) ? data.store : {};
  const security = isObject(host.security) ? host.security : {};
  const runtime = isObject(host.ociRuntime) ? host.ociRuntime : {};
  return {
    ociRuntime: str(runtime.name) ?? 'unknown',
    cgroupVersion: str(host.cgroupVersion) ?? 'unknown',
    cgroupManager: str(host.cgroupManager) ?? 'unknown',
    rootless: security.rootless === true,
    graphDriver: str(store.graphDriverName) ?? 'unknown',
  };
}

/**
 * `podman import SOURCE REF`: SOURCE is a tarball path, an http(s) URL, or
 * `-` for stdin. Parses to the new image's id.
 */
export function podmanImport(
  source: string,
  ref: string,
  options: { changes?: readonly string[]; stdin?: Buffer; env?: Record<string, string>; timeoutMs?: number } = {},
  cli: PodmanCli = DEFAULT_PODMAN_CLI,
): Command<string> {
  if (!(source === '-' || source.startsWith('/') || /^https?:\/\//.test(source))) {
    throw new InvalidArgumentError('import source must be an absolute path, an http(s) URL or -', { field: 'source' });
  }
  if (!ref || ref.startsWith('-') || /\s/.test(ref)) throw new InvalidArgumentError('not an image reference', { field: 'ref' });
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'import', '--quiet', ...(options.changes ?? []).flatMap((c) => ['--change', c]), source, ref],
    stdin: options.stdin,
    env: options.env,
    timeoutMs: options.timeoutMs ?? 600_000,
    parse: (stdout) => {
      const id = stdout.trim().split('\n').pop()?.trim().replace(/^sha256:/, '') ?? '';
      if (!/^[0-9a-f]{12,64}$/.test(id)) throw new Error('podman import printed no image id');
      return id;
    },
    mapError: (result) => execErrorFromResult(result),
  };
}

/** Archive formats an image import accepts: a rootfs tarball (`podman import`) or an image archive (`podman load`). */
export const IMAGE_ARCHIVE_FORMATS = ['rootfs-tar', 'oci-archive', 'docker-archive'] as const;
export type ImageArchiveFormat = (typeof IMAGE_ARCHIVE_FORMATS)[number];

// name components, an optional registry port, an optional tag (docker's reference grammar, no digests:
// an import makes a new image, so a digest could only lie).
const IMAGE_REF = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]{1,5})?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$/;

/** Checks an image reference given by a caller; InvalidArgument naming `field` otherwise. */
export function validateImageRef(ref: string, field = 'ref'): string {
  if (!ref || ref.length > 255 || !IMAGE_REF.test(ref)) {
    throw new InvalidArgumentError('ref must be an image reference such as localhost/app:1 (lowercase name, optional tag)', { field });
  }
  return ref;
}

export function validateImageFormat(format: string, field = 'format'): ImageArchiveFormat {
  if (!(IMAGE_ARCHIVE_FORMATS as readonly string[]).includes(format)) {
    throw new InvalidArgumentError(`format must be one of ${IMAGE_ARCHIVE_FORMATS.join(', ')}`, { field });
  }
  return format as ImageArchiveFormat;
}

/** `podman load -i ARCHIVE`: an OCI or docker archive. Parses to the names podman reports having loaded. */
export function podmanLoad(archivePath: string, cli: PodmanCli = DEFAULT_PODMAN_CLI, timeoutMs = 600_000): Command<string[]> {
  if (!archivePath.startsWith('/')) throw new InvalidArgumentError('archive path must be absolute', { field: 'archivePath' });
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'load', '--input', archivePath],
    timeoutMs,
    parse: (stdout) => {
      const names = stdout
        .split('\n')
        .map((line) => /^Loaded image(?:\(s\))?:\s*(.+)$/.exec(line.trim())?.[1])
        .filter((v): v is string => Boolean(v))
        .flatMap((v) => v.split(','))
        .map((v) => v.trim())
        .filter(Boolean);
      if (names.length === 0) throw new Error('podman load reported no image');
      return names;
    },
    mapError: (result) => execErrorFromResult(result),
  };
}

/** `podman tag SOURCE REF`. */
export function podmanTag(source: string, ref: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<void> {
  if (!source || source.startsWith('-')) throw new InvalidArgumentError('not an image', { field: 'source' });
  validateImageRef(ref);
  return { program: cli.program, args: [...cli.globalArgs, 'tag', source, ref], timeoutMs: 30_000, parse: () => undefined, mapError: (result) => execErrorFromResult(result) };
}

/** `podman image inspect --format {{.Id}} REF`: the image's id. */
export function podmanImageId(ref: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<string> {
  if (!ref || ref.startsWith('-')) throw new InvalidArgumentError('not an image', { field: 'ref' });
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'image', 'inspect', '--format', '{{.Id}}', ref],
    timeoutMs: 30_000,
    parse: (stdout) => {
      const id = stdout.trim().replace(/^sha256:/, '');
      if (!/^[0-9a-f]{12,64}$/.test(id)) throw new Error('podman image inspect printed no image id');
      return id;
    },
    mapError: (result) => (/image not known|no such image/i.test(result.stderr) ? new NotFoundError('no such image', { field: 'ref' }) : execErrorFromResult(result)),
  };
}

export interface ImageInfo {
  imageId: string;
  refs: string[];
  sizeBytes: number;
  createdAt: Date | undefined;
}

/** `podman images --format json`. */
export function podmanImages(cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<ImageInfo[]> {
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'images', '--format', 'json'],
    timeoutMs: 30_000,
    parse: (stdout) => parseImages(stdout),
    mapError: (result) => execErrorFromResult(result),
  };
}

export function parseImages(stdout: string): ImageInfo[] {
  const data: unknown = JSON.parse(stdout.trim() || '[]');
  if (!Array.isArray(data)) throw new Error('podman images printed no list');
  return data.filter(isObject).map((image) => {
    const names = Array.isArray(image.Names) ? image.Names.filter((n): n is string => typeof n === 'string') : [];
    const created = typeof image.Created === 'number' ? new Date(image.Created * 1000) : undefined;
    return {
      imageId: typeof image.Id === 'string' ? image.Id.replace(/^sha256:/, '') : '',
      refs: names,
      sizeBytes: typeof image.Size === 'number' ? image.Size : 0,
      createdAt: created,
    };
  });
}
