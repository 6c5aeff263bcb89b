import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError, NotFoundError, PermissionDeniedError, UnavailableError } from '@corral/domain';
import { defaultBaseEnv, execErrorFromResult, spawnInteractive, type Command, type ExecResult, type Executor } from '@corral/exec';
import type { Logger } from '@corral/logging';
import { DEFAULT_PODMAN_CLI, podmanMessage, type PodmanCli } from './commands';

// `podman pull` from a registry, as data plus one small runner:
//
// - the reference is checked and made fully qualified here (registry,
//   repository, tag or digest), so podman never falls back to its
//   short-name search and the allow-list judges the registry really used;
// - TLS verification is off only for registries the operator listed as
//   insecure (AGENT_IMAGE_INSECURE_REGISTRIES);
// - credentials travel in a 0600 auth file in a private directory, named
//   by `--authfile` and removed afterwards: never in argv (world-readable in
//   `ps`), the environment or a log line;
// - podman's stderr lines ("Copying blob …", "Writing manifest …") are the
//   progress; stdout's last line is the image id.
//
// The buffered executor cannot hand out lines while a program runs, so the
// pull is spawned with piped stdio (spawnInteractive) and given the
// executor's discipline here: its own process group, a timeout, abort, and
// output caps.

// --- references -----------------------------------------------------------------

const NAME_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const DOMAIN = '[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]{1,5})?';
/**
 * docker's reference grammar (lowercase): [registry/]repository[:tag][@sha256:digest].
 * The gateway checks the same pattern (apps/api-gateway image-operations.ts).
 */
export const PULL_REF_PATTERN = `^(?:${DOMAIN}/)?${NAME_COMPONENT}(?:/${NAME_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$`;
const PULL_REF = new RegExp(PULL_REF_PATTERN);

/** Where unqualified names come from, as with docker (podman would otherwise search or prompt). */
export const DEFAULT_REGISTRY = 'docker.io';

export interface PullReference {
  /** Fully qualified: registry/repository and a tag or a digest. */
  ref: string;
  /** host[:port], as the allow-lists and the auth file name it. */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

/** Checks a reference to pull and qualifies it; InvalidArgument naming `field` otherwise. */
export function parsePullReference(raw: string, field = 'ref'): PullReference {
  if (typeof raw !== 'string' || !raw || raw.length > 512 || !PULL_REF.test(raw)) {
    throw new InvalidArgumentError('ref must be an image reference such as docker.io/library/busybox:1.36 (lowercase, optional tag or @sha256: digest)', { field });
  }
  const [name, digest] = raw.split('@') as [string, string | undefined];
  const slash = name.indexOf('/');
  const first = slash < 0 ? '' : name.slice(0, slash);
  // docker's rule: the first component is a registry when it has a dot or a port, or is localhost.
  const hasRegistry = slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost');
  const registry = hasRegistry ? first : DEFAULT_REGISTRY;
  let path = hasRegistry ? name.slice(slash + 1) : name;
  const colon = path.lastIndexOf(':');
  const tag = colon >= 0 ? path.slice(colon + 1) : undefined;
  if (colon >= 0) path = path.slice(0, colon);
  const repository = registry === DEFAULT_REGISTRY && !path.includes('/') ? `library/${path}` : path;
  const suffix = digest ? `${tag ? `:${tag}` : ''}@${digest}` : `:${tag ?? 'latest'}`;
  const reference: PullReference = { ref: `${registry}/${repository}${suffix}`, registry, repository };
  if (digest) reference.digest = digest;
  if (tag || !digest) reference.tag = tag ?? 'latest';
  return reference;
}

// --- registry policy --------------------------------------------------------------

export interface RegistryPolicy {
  /** Registries (host[:port]) pulls may use; empty: any. */
  allowed: readonly string[];
  /** Registries reached without TLS verification (plain HTTP or self-signed). */
  insecure: readonly string[];
}

export const OPEN_REGISTRY_POLICY: RegistryPolicy = { allowed: [], insecure: [] };

const sameRegistry = (a: string, b: string) => a.trim().toLowerCase() === b.trim().toLowerCase();

/** Refuses a registry outside a non-empty allow-list (InvalidArgument `ref`); true when TLS must be verified. */
export function tlsVerifyFor(reference: PullReference, policy: RegistryPolicy, field = 'ref'): boolean {
  if (policy.allowed.length > 0 && !policy.allowed.some((r) => sameRegistry(r, reference.registry))) {
    throw new InvalidArgumentError(`registry ${reference.registry} is not on this host's list of allowed registries`, { field });
  }
  return !policy.insecure.some((r) => sameRegistry(r, reference.registry));
}

// --- credentials --------------------------------------------------------------------

export interface RegistryCredentials {
  username: string;
  password: string;
}

/** Credentials given (both empty counts as none), checked; InvalidArgument naming the field otherwise. */
export function checkCredentials(credentials: Partial<RegistryCredentials> | undefined): RegistryCredentials | undefined {
  const username = credentials?.username ?? '';
  const password = credentials?.password ?? '';
  if (!username && !password) return undefined;
  // Basic auth joins them with ':', so a username cannot hold one.
  if (!username || username.length > 256 || /[:\s]/.test(username)) {
    throw new InvalidArgumentError('credentials.username must be 1-256 characters without ":" or spaces', { field: 'credentials.username' });
  }
  if (!password || password.length > 4096 || /[\r\n]/.test(password)) {
    throw new InvalidArgumentError('credentials.password must be 1-4096 characters on one line', { field: 'credentials.password' });
  }
  return { username, password };
}

/** The containers-auth.json document podman reads with --authfile. */
export function authFileContent(registry: string, credentials: RegistryCredentials): string {
  const auth = Buffer.from(`${credentials.username}:${credentials.password}`, 'utf8').toString('base64');
  return JSON.stringify({ auths: { [registry]: { auth } } });
}

/**
 * Writes the auth file 0600 into a fresh 0700 directory under `parentDir`
 * and returns its path and the directory's removal (call it in a finally).
 */
export async function writeAuthFile(parentDir: string, registry: string, credentials: RegistryCredentials): Promise<{ path: string; remove: () => Promise<void> }> {
  await mkdir(parentDir, { recursive: true, mode: 0o700 });
  const dir = await mkdtemp(join(parentDir, 'pull-'));
  const path = join(dir, 'auth.json');
  try {
    await writeFile(path, authFileContent(registry, credentials), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return { path, remove: () => rm(dir, { recursive: true, force: true }) };
}

// --- progress -------------------------------------------------------------------------

export type PullPhase = 'resolving' | 'retrying' | 'copying-blob' | 'copying-config' | 'writing-manifest' | 'storing-signatures';

export interface PullProgress {
  phase: PullPhase;
  /** The blob or config being copied (sha256:…). */
  digest?: string;
  /** Layer blobs started so far. */
  blobs: number;
  /** The blob was in the store already and was not downloaded. */
  alreadyPresent?: boolean;
}

const digestOf = (text: string) => (text.includes(':') ? text : `sha256:${text}`);

/**
 * A parser of podman pull's stderr, one line at a time (stateful: it counts
 * blobs). Lines that are no progress (errors, warnings other than retries)
 * answer undefined. Nothing of a line's free text is passed on: a retry
 * warning carries registry URLs and podman's error text.
 */
export function pullProgressParser(): (line: string) => PullProgress | undefined {
  const blobs = new Set<string>();
  return (raw) => {
    const line = raw.trim();
    if (/^Trying to pull \S+/.test(line)) return { phase: 'resolving', blobs: blobs.size };
    if (/level=warning msg="Failed, retrying in/.test(line)) return { phase: 'retrying', blobs: blobs.size };
    const blob = /^Copying blob (\S+)(?:\s+(.*))?$/.exec(line);
    if (blob) {
      const digest = digestOf(blob[1] as string);
      blobs.add(digest);
      const rest = blob[2] ?? '';
      return { phase: 'copying-blob', digest, blobs: blobs.size, ...(/skipped|already exists/i.test(rest) ? { alreadyPresent: true } : {}) };
    }
    const config = /^Copying config (\S+)/.exec(line);
    if (config) return { phase: 'copying-config', digest: digestOf(config[1] as string), blobs: blobs.size };
    if (/^Writing manifest/.test(line)) return { phase: 'writing-manifest', blobs: blobs.size };
    if (/^Storing signatures/.test(line)) return { phase: 'storing-signatures', blobs: blobs.size };
    return undefined;
  };
}

// --- the command ----------------------------------------------------------------------

export interface PullCommandOptions {
  tlsVerify: boolean;
  /** Path of an auth file written by writeAuthFile; never the credentials themselves. */
  authFile?: string;
  timeoutMs?: number;
}

/** Default longest pull; AGENT_IMAGE_PULL_TIMEOUT_MS overrides it. */
export const DEFAULT_PULL_TIMEOUT_MS = 30 * 60_000;

/**
 * `podman pull [--tls-verify=false] [--authfile F] REF`. Parses stdout to the
 * image id; maps failures by what the registry said.
 */
export function podmanPull(reference: PullReference, options: PullCommandOptions, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<string> {
  if (options.authFile !== undefined && !options.authFile.startsWith('/')) throw new InvalidArgumentError('auth file path must be absolute', { field: 'authFile' });
  return {
    program: cli.program,
    args: [
      ...cli.globalArgs,
      'pull',
      ...(options.tlsVerify ? [] : ['--tls-verify=false']),
      ...(options.authFile ? ['--authfile', options.authFile] : []),
      // Fully qualified and checked: it cannot be read as an option.
      reference.ref,
    ],
    timeoutMs: options.timeoutMs ?? DEFAULT_PULL_TIMEOUT_MS,
    parse: (stdout) => {
      const id = stdout.trim().split('\n').pop()?.trim().replace(/^sha256:/, '') ?? '';
      if (!/^[0-9a-f]{64}$/.test(id)) throw new Error('podman pull printed no image id');
      return id;
    },
    mapError: (result) => mapPullError(result, reference),
  };
}

const UNREACHABLE = /connection refused|no such host|i\/o timeout|network is unreachable|no route to host|TLS handshake timeout|connection reset|dial tcp/i;
const PLAIN_HTTP = /server gave HTTP response to HTTPS client/i;
const BAD_CERTIFICATE = /x509:|certificate signed by unknown authority|tls: failed to verify/i;
const REFUSED = /unauthorized|authentication required|requested access to the resource is denied|denied:/i;
const MISSING = /manifest unknown|name unknown|not found|no such image|repository .* does not exist/i;

/** What a failed pull means for the caller, from podman's last Error line; fixed texts, no registry URLs or podman wording. */
export function mapPullError(result: ExecResult, reference: PullReference): Error {
  const cause = execErrorFromResult(result);
  const said = podmanMessage(result.stderr);
  if (PLAIN_HTTP.test(said)) {
    return new FailedPreconditionError(`registry ${reference.registry} answers plain HTTP: the host's operator must list it in AGENT_IMAGE_INSECURE_REGISTRIES`, { field: 'ref', cause });
  }
  if (BAD_CERTIFICATE.test(said)) return new FailedPreconditionError(`the TLS certificate of registry ${reference.registry} is not trusted on this host`, { field: 'ref', cause });
  if (UNREACHABLE.test(said)) return new UnavailableError(`registry ${reference.registry} cannot be reached`, { cause });
  if (REFUSED.test(said)) return new PermissionDeniedError(`registry ${reference.registry} refused access to ${reference.ref}`, { cause });
  if (MISSING.test(said)) return new NotFoundError(`registry ${reference.registry} has no image ${reference.ref}`, { field: 'ref', cause });
  return cause;
}

/** `podman image inspect --format {{.Digest}} ID`: the manifest digest an image was pulled as. */
export function podmanImageDigest(imageId: string, cli: PodmanCli = DEFAULT_PODMAN_CLI): Command<string> {
  if (!/^[0-9a-f]{12,64}$/.test(imageId)) throw new InvalidArgumentError('not an image id', { field: 'imageId' });
  return {
    program: cli.program,
    args: [...cli.globalArgs, 'image', 'inspect', '--format', '{{.Digest}}', imageId],
    timeoutMs: 30_000,
    parse: (stdout) => {
      const digest = stdout.trim();
      return /^sha256:[0-9a-f]{64}$/.test(digest) ? digest : '';
    },
    mapError: (result) => execErrorFromResult(result),
  };
}

// --- running it -------------------------------------------------------------------------

/** A progress line with the fully qualified reference being pulled. */
export type PullProgressEvent = PullProgress & { ref: string };

export interface PullRequest {
  ref: string;
  credentials?: Partial<RegistryCredentials>;
}

export interface PulledImage {
  imageId: string;
  /** Fully qualified reference pulled. */
  ref: string;
  /** Manifest digest; empty when podman did not record one. */
  digest: string;
}

export interface PullSettings {
  policy: RegistryPolicy;
  /** Parent of the private directories auth files are written to (under the agent's state dir). */
  authDir: string;
  timeoutMs: number;
}

export interface PullDeps {
  /** Must allow `cli.program`. */
  executor: Executor;
  cli: PodmanCli;
  logger: Logger;
}

/** Most of stdout kept (image ids) and of stderr (for the error mapping). */
const STDOUT_CAP = 64 * 1024;
const STDERR_TAIL_CAP = 16 * 1024;

/**
 * Pulls `request.ref` into podman's store, reporting progress as podman
 * prints it. Aborting `signal` (the caller went away) or passing the timeout
 * kills podman's process group.
 */
export async function pullImage(
  deps: PullDeps,
  settings: PullSettings,
  request: PullRequest,
  options: { onProgress?: (progress: PullProgressEvent) => void; signal?: AbortSignal } = {},
): Promise<PulledImage> {
  const reference = parsePullReference(request.ref);
  const tlsVerify = tlsVerifyFor(reference, settings.policy);
  const credentials = checkCredentials(request.credentials);
  const authFile = credentials ? await writeAuthFile(settings.authDir, reference.registry, credentials) : undefined;
  try {
    const command = podmanPull(reference, { tlsVerify, authFile: authFile?.path, timeoutMs: settings.timeoutMs }, deps.cli);
    deps.logger.info('pulling image', { ref: reference.ref, registry: reference.registry, tlsVerify, withCredentials: credentials !== undefined });
    const onProgress = options.onProgress;
    const imageId = await runStreaming(deps.executor, command, pullProgressParser(), {
      signal: options.signal,
      onProgress: onProgress && ((p) => onProgress({ ...p, ref: reference.ref })),
    });
    const digest = await deps.executor.run(podmanImageDigest(imageId, deps.cli)).catch(() => reference.digest ?? '');
    deps.logger.info('pulled image', { ref: reference.ref, imageId });
    return { imageId, ref: reference.ref, digest: digest || reference.digest || '' };
  } finally {
    await authFile?.remove();
  }
}

/** Runs `command` with piped output, handing each stderr line to `parseLine`; the executor's rules otherwise. */
async function runStreaming<T, P>(
  executor: Executor,
  command: Command<T>,
  parseLine: (line: string) => P | undefined,
  options: { onProgress?: (progress: P) => void; signal?: AbortSignal },
): Promise<T> {
  const program = executor.resolve(command.program);
  if (!program) throw new FailedPreconditionError(`${command.program} is not installed on this host`);
  if (options.signal?.aborted) throw abortReason(options.signal);
  const started = Date.now();
  let child;
  try {
    child = await spawnInteractive({ program, args: command.args, env: { ...defaultBaseEnv(), ...command.env } });
  } catch {
    throw new UnavailableError(`could not start ${command.program}`);
  }
  child.stdin.end();
  const proc = child;
  let stopped: Error | undefined;
  const stop = (why: Error) => {
    stopped ??= why;
    proc.kill('SIGKILL');
  };
  const timeoutMs = command.timeoutMs ?? DEFAULT_PULL_TIMEOUT_MS;
  const timer = setTimeout(() => stop(new DeadlineExceededError(`the pull did not finish within ${timeoutMs} ms`)), timeoutMs);
  const onAbort = () => stop(abortReason(options.signal as AbortSignal));
  options.signal?.addEventListener('abort', onAbort, { once: true });

  let stdout = '';
  let stderrTail = '';
  let pending = '';
  proc.stdout.setEncoding('utf8');
  proc.stderr.setEncoding('utf8');
  proc.stdout.on('data', (chunk: string) => {
    stdout = (stdout + chunk).slice(-STDOUT_CAP);
  });
  const onLine = (line: string) => {
    const progress = parseLine(line);
    if (progress !== undefined) options.onProgress?.(progress);
  };
  proc.stderr.on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-STDERR_TAIL_CAP);
    pending += chunk;
    const lines = pending.split(/\r?\n|\r/);
    pending = lines.pop() ?? '';
    if (pending.length > STDERR_TAIL_CAP) pending = pending.slice(-STDERR_TAIL_CAP);
    for (const line of lines) onLine(line);
  });
  try {
    const status = await proc.exited;
    if (pending) onLine(pending);
    if (stopped) throw stopped;
    const result: ExecResult = { program, exitCode: status.exitCode, signal: status.signal, stdout, stderr: stderrTail, durationMs: Date.now() - started };
    if (status.exitCode !== 0) throw command.mapError(result);
    return command.parse(stdout, stderrTail);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new DeadlineExceededError('the pull was cancelled');
}
