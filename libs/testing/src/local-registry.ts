import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, defaultBaseEnv, execErrorFromResult, resolveProgram, spawnSupervised, type Executor, type SupervisedProcess } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { describeIfAvailable } from './describe-if-available';
import { eventually, freePort } from './ports';

// A throw-away container registry for pull tests: Debian's docker-registry
// (the CNCF distribution registry) serving plain HTTP on 127.0.0.1 with its
// storage in a temp dir, optionally behind htpasswd basic auth. Nothing here
// reaches the internet: images are pushed into it from podman's own store.

export const DOCKER_REGISTRY_PROGRAM = '/usr/bin/docker-registry';

/** The one login of a registry started with `auth: true`. */
export const LOCAL_REGISTRY_USERNAME = 'corral';
export const LOCAL_REGISTRY_PASSWORD = 'corral-registry-test';
// bcrypt of LOCAL_REGISTRY_PASSWORD (htpasswd wants bcrypt; Node has none built in).
const PASSWORD_BCRYPT = '$2b$12$tQb92AVfDhn3.NEAMyJyoOl5daAdhTNFbXi.FdDjqztqG3AmkV2jG';

export interface LocalRegistry {
  /** host:port, e.g. 127.0.0.1:41234: the registry part of its image references. */
  address: string;
  /** Whether pulls need LOCAL_REGISTRY_USERNAME / LOCAL_REGISTRY_PASSWORD. */
  auth: boolean;
  /** `podman push` of a local image to `<address>/<repository>`; returns that reference. */
  push(localRef: string, repository: string): Promise<string>;
  /** Stops the registry and removes its storage. */
  stop(): Promise<void>;
}

/** Why a local registry cannot run here, or undefined when it can. */
export function localRegistryUnavailableReason(): string | undefined {
  if (!resolveProgram(DOCKER_REGISTRY_PROGRAM, process.env.PATH)) return `${DOCKER_REGISTRY_PROGRAM} is not installed (Debian package: docker-registry)`;
  if (!resolveProgram('podman', process.env.PATH)) return 'podman is not installed (Debian packages: podman runc busybox-static)';
  return undefined;
}

/** `describe` when docker-registry and podman are installed; `describe.skip`, with the reason printed, otherwise. */
export function describeWithLocalRegistry(name: string, fn: () => void): void {
  describeIfAvailable(name, localRegistryUnavailableReason(), fn);
}

function registryConfig(storageDir: string, address: string, htpasswdPath: string | undefined): string {
  return [
    'version: 0.1',
    'log:',
    '  level: warn',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${storageDir}`,
    '  delete:',
    '    enabled: true',
    ...(htpasswdPath ? ['auth:', '  htpasswd:', '    realm: corral-test', `    path: ${htpasswdPath}`] : []),
    'http:',
    `  addr: ${address}`,
    '',
  ].join('\n');
}

export interface StartLocalRegistryOptions {
  /** Require basic auth (LOCAL_REGISTRY_USERNAME / LOCAL_REGISTRY_PASSWORD). */
  auth?: boolean;
  /** Must allow podman. */
  executor?: Executor;
}

/** Starts a registry on a free port and waits until it answers /v2/. */
export async function startLocalRegistry(options: StartLocalRegistryOptions = {}): Promise<LocalRegistry> {
  const reason = localRegistryUnavailableReason();
  if (reason) throw new Error(`cannot start a local registry: ${reason}`);
  const auth = options.auth ?? false;
  const dir = mkdtempSync(join(tmpdir(), 'corral-registry-'));
  const address = `127.0.0.1:${await freePort()}`;
  const htpasswd = auth ? join(dir, 'htpasswd') : undefined;
  if (htpasswd) writeFileSync(htpasswd, `${LOCAL_REGISTRY_USERNAME}:${PASSWORD_BCRYPT}\n`, { mode: 0o600 });
  const configPath = join(dir, 'config.yml');
  writeFileSync(configPath, registryConfig(join(dir, 'storage'), address, htpasswd));
  const logPath = join(dir, 'registry.log');
  const registry: SupervisedProcess = await spawnSupervised({ program: DOCKER_REGISTRY_PROGRAM, args: ['serve', configPath], env: defaultBaseEnv(), cwd: dir, logPath });
  const stop = async () => {
    registry.kill('SIGKILL');
    await registry.wait().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await eventually(
      async () => {
        const res = await fetch(`http://${address}/v2/`).catch(() => undefined);
        // 401: up, and asking for the login.
        return res && (res.status === 200 || res.status === 401) ? true : undefined;
      },
      { timeoutMs: 20_000, what: `docker-registry on ${address}` },
    );
  } catch (err) {
    let log = '';
    try {
      log = readFileSync(logPath, 'utf8').slice(-2000);
    } catch {
      // no log yet
    }
    await stop();
    throw new Error(`${(err as Error).message}\n${log}`);
  }

  const executor = options.executor ?? createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
  return {
    address,
    auth,
    async push(localRef, repository) {
      const target = `${address}/${repository}`;
      const authDir = mkdtempSync(join(tmpdir(), 'corral-registry-auth-'));
      try {
        const authFile = join(authDir, 'auth.json');
        const token = Buffer.from(`${LOCAL_REGISTRY_USERNAME}:${LOCAL_REGISTRY_PASSWORD}`).toString('base64');
        writeFileSync(authFile, JSON.stringify({ auths: { [address]: { auth: token } } }), { mode: 0o600 });
        await executor.run({
          program: 'podman',
          args: ['push', '--tls-verify=false', ...(auth ? ['--authfile', authFile] : []), localRef, target],
          timeoutMs: 120_000,
          parse: () => undefined,
          mapError: (result) => execErrorFromResult(result),
        });
      } finally {
        rmSync(authDir, { recursive: true, force: true });
      }
      return target;
    },
    stop,
  };
}
