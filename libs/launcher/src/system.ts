import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '@corral/db';
import { startEmbeddedBroker, writeNatsServerConfig, type EmbeddedBroker } from '@corral/events';
import { resolveProgram, spawnSupervised, type SupervisedProcess } from '@corral/exec';
import { checkHealth, createClient, mutualTlsProbeCredentials, type ChannelCredentials, type TlsMaterial } from '@corral/grpc';
import { hostRegistryV1 } from '@corral/proto';
import { natsSubjectNamespaceFor } from './nats-namespace';
import { ensureLocalPki, scheduleControlPlaneRenewal, type LocalPki } from './pki';
import { allocatePorts, freePort, type Ports, type PortsMode } from './ports';
import { tailFile } from './tail';

// Starts all of Corral on one machine, each service as its own process, the
// way `npm start` and the end-to-end tests need it. Only what is missing is
// embedded: PGlite when no DATABASE_URL is given, and for the bus a
// nats-server found on PATH, else the in-process NATS-protocol broker.

export const SERVICES = ['host-registry', 'scheduler', 'edge-router', 'secrets-broker', 'reconciler', 'api-gateway'] as const;
export type ServiceName = (typeof SERVICES)[number] | 'node-agent';

export interface SystemOptions {
  repoRoot: string;
  dataDir: string;
  databaseUrl?: string;
  natsUrl?: string;
  portsMode?: PortsMode;
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
  /** Start a local node agent with the process driver enabled (default true). */
  localAgent?: boolean;
  heartbeatIntervalMs?: number;
  /**
   * `auto` (default): a nats-server found on PATH, else the embedded broker.
   * `embedded`: always the embedded broker (CORRAL_EMBEDDED_BUS=true).
   */
  bus?: 'auto' | 'embedded';
  /**
   * Prefix of every NATS subject of this system (NATS_SUBJECT_NAMESPACE of
   * every service and agent). Default: one generated on the first start and
   * kept in <dataDir>/nats-subject-namespace, so systems sharing a NATS
   * server (e2e suites on the CI NATS) cannot hear each other's events while
   * a restart keeps it. `''`: the bare `corral.…` subjects.
   */
  natsSubjectNamespace?: string;
  /** Progress lines for a person watching. */
  progress?: (line: string) => void;
  /**
   * TLS everywhere (default true): a CA under <dataDir>/pki, its files given
   * to host-registry (which then serves TLS and issues hosts' certificates),
   * control-plane certificates to the scheduler and reconciler, the CA to
   * every caller of host-registry (agents: AGENT_CONTROL_PLANE_CA_FILE) and,
   * when the launcher starts its own nats-server, TLS on the bus. `false`
   * runs all of it in plaintext (agents get AGENT_ALLOW_INSECURE_CONTROL_PLANE).
   */
  mutualTls?: boolean;
  /** Extra environment for the reconciler (e.g. a short RECONCILE_INTERVAL_MS and grace in e2e tests). */
  reconcilerEnv?: Record<string, string>;
  /** Extra environment for every node agent (e.g. AGENT_IMAGE_INSECURE_REGISTRIES for a local registry in e2e tests). */
  agentEnv?: Record<string, string>;
}

export interface RunningService {
  name: ServiceName;
  pid: number;
  logPath: string;
  address: string;
}

export interface ExtraAgentOptions {
  /** Names its state dir (`<dataDir>/agents/<name>`), log and host: lowercase letters, digits, dashes. */
  name: string;
  /** Registers with it when its state dir holds no identity yet (e.g. a team's token: a BYOC host). */
  registrationToken: string;
}

/** A node agent besides the local one, with its own state dir, port and host identity. */
export interface ExtraAgent {
  name: string;
  hostId: string;
  /** Where it serves gRPC to the control plane. */
  address: string;
  stateDir: string;
  logPath: string;
  /** Stops its process (its workloads keep running, as for the local agent). */
  stop(): Promise<void>;
  /** Starts it again with its stored identity; resolves once it serves. */
  start(): Promise<void>;
}

export interface RunningSystem {
  gatewayUrl: string;
  gatewayGrpcAddress: string;
  /** Set only on the start that created the first admin key. */
  adminKey?: string;
  databaseUrl: string;
  natsUrl: string;
  /** The subject namespace its services use ('' for none): a bus of a test must connect with it to hear them. */
  natsSubjectNamespace: string;
  busKind: 'external' | 'nats-server' | 'embedded-broker';
  databaseKind: 'external' | 'embedded-pglite';
  localHostId?: string;
  /** The local CA's directory, when mutual TLS is on. */
  pkiDir?: string;
  /** A control-plane certificate (service `launcher`) from the local CA, when mutual TLS is on: probes agents' health. */
  controlPlaneTls?: TlsMaterial;
  /** For calling host-registry (it serves TLS from the local CA when mutual TLS is on); undefined: plaintext. */
  hostRegistryCredentials?: ChannelCredentials;
  /** The local CA's pin (AGENT_CONTROL_PLANE_CA_SHA256), when mutual TLS is on. */
  controlPlaneCaPin?: string;
  /** Whether the bus is the launcher's own nats-server serving TLS (services get NATS_TLS_CA_FILE). */
  natsTls: boolean;
  ports: Ports;
  services: RunningService[];
  logPath(name: ServiceName): string;
  /** Stops one service's process; for the node agent its workloads keep running. */
  stopService(name: ServiceName): Promise<void>;
  /** Kills one service's process at once, as a crash would (`kill -9`). */
  killService(name: ServiceName): Promise<void>;
  startService(name: ServiceName): Promise<void>;
  /**
   * Starts the local node agent. Without a stored identity it registers with
   * `registrationToken`, or with a token the launcher asks host-registry for.
   */
  startAgent(options?: { registrationToken?: string }): Promise<string>;
  /**
   * Starts another node agent (process driver on, like the local one) that
   * registers with `registrationToken`; resolves once it serves and has its
   * host id. Stopped with the system.
   */
  startExtraAgent(options: ExtraAgentOptions): Promise<ExtraAgent>;
  stop(): Promise<void>;
}

export const NATS_SERVER_CANDIDATES = ['nats-server', '/usr/sbin/nats-server', '/usr/local/bin/nats-server', '/usr/bin/nats-server'];

function findNatsServer(): string | undefined {
  for (const candidate of NATS_SERVER_CANDIDATES) {
    try {
      return resolveProgram(candidate, process.env.PATH ?? '');
    } catch {
      // not here; try the next place
    }
  }
  return undefined;
}

function secretFile(path: string, bytes = 32): string {
  if (existsSync(path)) return readFileSync(path, 'utf8').trim();
  const value = randomBytes(bytes).toString('base64url');
  writeFileSync(path, value + '\n', { mode: 0o600 });
  return value;
}

async function waitFor(what: string, check: () => Promise<boolean>, proc: { exited: boolean; logPath: string } | undefined, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc?.exited) throw new Error(`${what} exited during start-up; last log lines:\n${tailFile(proc.logPath, 40)}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms${proc ? `; last log lines:\n${tailFile(proc.logPath, 40)}` : ''}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

export async function startSystem(options: SystemOptions): Promise<RunningSystem> {
  const progress = options.progress ?? (() => undefined);
  const repoRoot = resolve(options.repoRoot);
  const dataDir = resolve(options.dataDir);
  const logDir = join(dataDir, 'logs');
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  const ports = await allocatePorts(options.portsMode ?? 'fixed');
  const cleanups: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => undefined);
  };

  try {
    // Database
    let databaseUrl = options.databaseUrl;
    let databaseKind: RunningSystem['databaseKind'] = 'external';
    if (!databaseUrl) {
      progress(`starting embedded Postgres (PGlite) in ${join(dataDir, 'pglite')}`);
      const pg: EmbeddedPostgres = await startEmbeddedPostgres({ dataDir: join(dataDir, 'pglite'), port: ports.postgres });
      cleanups.push(() => pg.stop());
      databaseUrl = pg.url;
      databaseKind = 'embedded-pglite';
    }

    // The local CA first: the nats-server started below serves TLS from it.
    const pki = options.mutualTls === false ? undefined : await ensureLocalPki(dataDir);
    if (pki) progress(`TLS from the local CA in ${pki.dir}: mutual TLS between the scheduler and agents, TLS to host-registry (CA pin ${pki.caPin})`);
    if (pki) {
      // A long-running system keeps valid control-plane certificates: the scheduler reloads its files.
      const renewal = scheduleControlPlaneRenewal(pki, {
        onRenewed: () => progress('control-plane certificates renewed'),
        onError: (err) => progress(`control-plane certificates could not be renewed (retrying in an hour): ${err.message}`),
      });
      cleanups.push(async () => renewal.stop());
    }

    // Event bus
    let natsUrl = options.natsUrl;
    // Set when the bus is a nats-server the launcher starts with TLS from the local CA.
    let natsTls = false;
    let busKind: RunningSystem['busKind'] = 'external';
    if (!natsUrl) {
      const natsServer = options.bus === 'embedded' ? undefined : findNatsServer();
      if (natsServer) {
        progress(`starting ${natsServer} with JetStream in ${join(dataDir, 'nats')}`);
        mkdirSync(join(dataDir, 'nats'), { recursive: true });
        const logPath = join(logDir, 'nats-server.log');
        // With the local CA it serves TLS: the settings go into a 0600
        // config file (it names key files), the program gets only its path.
        let args = ['-a', '127.0.0.1', '-p', String(ports.nats), '-js', '-sd', join(dataDir, 'nats')];
        if (pki) {
          const configFile = join(dataDir, 'nats', 'nats-server.conf');
          writeNatsServerConfig(configFile, { host: '127.0.0.1', port: ports.nats, jetStreamDir: join(dataDir, 'nats'), tls: pki.natsServer });
          args = ['-c', configFile];
          natsTls = true;
        }
        const proc = await spawnSupervised({
          program: natsServer,
          args,
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
          cwd: dataDir,
          logPath,
        });
        const state = track(proc, logPath);
        cleanups.push(() => stopProcess(proc, 5000));
        natsUrl = `nats://127.0.0.1:${ports.nats}`;
        await waitFor('nats-server', () => tcpOpen('127.0.0.1', ports.nats), state, 20_000);
        busKind = 'nats-server';
      } else {
        progress(`${options.bus === 'embedded' ? 'embedded bus requested' : 'no nats-server on PATH'}: starting the embedded NATS-protocol broker (core NATS, no JetStream)`);
        const broker: EmbeddedBroker = await startEmbeddedBroker({ host: '127.0.0.1', port: ports.nats });
        cleanups.push(() => broker.stop());
        natsUrl = broker.url;
        busKind = 'embedded-broker';
      }
    }


    const natsSubjectNamespace = natsSubjectNamespaceFor(dataDir, options.natsSubjectNamespace);
    progress(natsSubjectNamespace ? `NATS subject namespace: ${natsSubjectNamespace} (agents joining from elsewhere need NATS_SUBJECT_NAMESPACE=${natsSubjectNamespace})` : 'NATS subjects without a namespace');
    const address = (port: number) => `127.0.0.1:${port}`;
    const common: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: process.env.HOME ?? dataDir,
      TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json'),
      LOG_LEVEL: options.logLevel ?? 'info',
      NATS_URL: natsUrl,
      NATS_SUBJECT_NAMESPACE: natsSubjectNamespace,
      ...(natsTls ? pki?.natsClientEnv : {}),
      HOST_REGISTRY_ADDR: address(ports.hostRegistry),
      SCHEDULER_ADDR: address(ports.scheduler),
      HEARTBEAT_INTERVAL_MS: String(options.heartbeatIntervalMs ?? 1000),
    };
    const adminKeyFile = join(dataDir, 'bootstrap-admin-key');
    const envFor: Record<ServiceName, Record<string, string>> = {
      'host-registry': {
        DATABASE_URL: databaseUrl,
        HOST_REGISTRY_GRPC_PORT: String(ports.hostRegistry),
        HOST_TOKEN_SECRET: secretFile(join(dataDir, 'host-token-secret')),
        ...pki?.hostRegistryEnv,
      },
      scheduler: { DATABASE_URL: databaseUrl, SCHEDULER_GRPC_PORT: String(ports.scheduler), ...pki?.schedulerEnv, ...pki?.hostRegistryClientEnv },
      'edge-router': { EDGE_ROUTER_GRPC_PORT: String(ports.edgeRouter) },
      'secrets-broker': { SECRETS_BROKER_GRPC_PORT: String(ports.secretsBroker) },
      reconciler: { DATABASE_URL: databaseUrl, RECONCILER_GRPC_PORT: String(ports.reconciler), ...pki?.reconcilerEnv, ...pki?.hostRegistryClientEnv, ...options.reconcilerEnv },
      'api-gateway': {
        DATABASE_URL: databaseUrl,
        GATEWAY_HTTP_PORT: String(ports.gatewayHttp),
        GATEWAY_GRPC_PORT: String(ports.gatewayGrpc),
        GATEWAY_ADMIN_KEY_FILE: adminKeyFile,
        ...pki?.hostRegistryClientEnv,
      },
      'node-agent': {
        AGENT_GRPC_PORT: String(ports.agent),
        AGENT_STATE_DIR: join(dataDir, 'agent'),
        AGENT_ENABLE_PROCESS_DRIVER: 'true',
        // Registered always; its fingerprint reports it unhealthy (and the
        // scheduler places nothing on it) where podman does not work.
        AGENT_ENABLE_PODMAN_DRIVER: 'true',
        AGENT_ENABLE_QEMU_DRIVER: 'true',
        AGENT_HEARTBEAT_INTERVAL_MS: String(options.heartbeatIntervalMs ?? 1000),
        // Registration and refresh tokens go only to a host-registry verified by the local CA.
        ...(pki ? pki.agentEnv : { AGENT_ALLOW_INSECURE_CONTROL_PLANE: 'true' }),
        ...options.agentEnv,
      },
    };
    const addressOf: Record<ServiceName, string> = {
      'host-registry': address(ports.hostRegistry),
      scheduler: address(ports.scheduler),
      'edge-router': address(ports.edgeRouter),
      'secrets-broker': address(ports.secretsBroker),
      reconciler: address(ports.reconciler),
      'api-gateway': address(ports.gatewayGrpc),
      'node-agent': address(ports.agent),
    };

    const running = new Map<ServiceName, { proc: SupervisedProcess; state: TrackedState; service: RunningService }>();
    const launch = async (name: ServiceName, extraEnv: Record<string, string> = {}) => {
      const logPath = join(logDir, `${name}.log`);
      progress(`starting ${name} (log: ${logPath})`);
      const proc = await spawnSupervised({
        program: process.execPath,
        args: ['--import', 'tsx', join(repoRoot, 'apps', name, 'src', 'main.ts')],
        env: { ...common, ...envFor[name], ...extraEnv },
        cwd: repoRoot,
        logPath,
      });
      const state = track(proc, logPath);
      const service: RunningService = { name, pid: proc.pid, logPath, address: addressOf[name] };
      running.set(name, { proc, state, service });
      const credentials = name === 'host-registry' ? pki?.hostRegistryCredentials : undefined;
      const healthy =
        name === 'node-agent' ? () => agentServing(addressOf[name], pki) : async () => (await checkHealth(addressOf[name], '', { deadlineMs: 1000, credentials })) === 'SERVING';
      await waitFor(name, healthy, state, 90_000);
    };
    cleanups.push(async () => {
      // Reverse start order: the gateway stops taking requests first.
      for (const name of [...running.keys()].reverse()) await stopProcess(running.get(name)!.proc, 10_000);
      running.clear();
    });

    // host-registry and scheduler apply migrations; start one first so the
    // others find the schema in place instead of waiting on its lock.
    await launch('host-registry');
    await Promise.all(SERVICES.filter((s) => s !== 'host-registry').map((s) => launch(s)));
    await waitFor('api-gateway HTTP', () => httpOk(`http://${address(ports.gatewayHttp)}/healthz`), running.get('api-gateway')!.state, 30_000);

    let adminKey: string | undefined;
    if (existsSync(adminKeyFile)) {
      adminKey = readFileSync(adminKeyFile, 'utf8').trim();
      // Shown once, like a Vault dev root token: it does not stay on disk.
      rmSync(adminKeyFile);
    }

    let localHostId: string | undefined;
    const agentDir = join(dataDir, 'agent');
    const startAgent = async (agentOptions: { registrationToken?: string } = {}) => {
      mkdirSync(agentDir, { recursive: true, mode: 0o700 });
      const extra: Record<string, string> = {};
      if (agentOptions.registrationToken) {
        extra.AGENT_REGISTRATION_TOKEN = agentOptions.registrationToken;
      } else if (!existsSync(join(agentDir, 'identity.json'))) {
        const registry = createClient(hostRegistryV1.HostRegistryServiceClient, address(ports.hostRegistry), { deadlineMs: 5000, credentials: pki?.hostRegistryCredentials });
        const token = await registry.createRegistrationToken({ ttlSeconds: 600, teamId: '', description: 'local node agent started by the launcher', scope: undefined });
        registry.close();
        extra.AGENT_REGISTRATION_TOKEN = token.token;
      }
      await launch('node-agent', extra);
      const identity = JSON.parse(readFileSync(join(agentDir, 'identity.json'), 'utf8')) as { hostId: string };
      localHostId = identity.hostId;
      const registry = createClient(hostRegistryV1.HostRegistryServiceClient, address(ports.hostRegistry), { deadlineMs: 5000, credentials: pki?.hostRegistryCredentials });
      await waitFor(
        'local host online',
        async () => (await registry.getHost({ id: identity.hostId })).host?.status === 'HOST_STATUS_ONLINE',
        running.get('node-agent')!.state,
        30_000,
      );
      registry.close();
      return identity.hostId;
    };
    if (options.localAgent ?? true) await startAgent();

    const extraAgents = new Map<string, { proc?: SupervisedProcess }>();
    cleanups.push(async () => {
      for (const entry of extraAgents.values()) if (entry.proc) await stopProcess(entry.proc, 10_000);
      extraAgents.clear();
    });
    const startExtraAgent = async (agentOptions: ExtraAgentOptions): Promise<ExtraAgent> => {
      const { name, registrationToken } = agentOptions;
      if (!/^[a-z0-9][a-z0-9-]{0,39}$/.test(name)) throw new Error(`extra agent name ${JSON.stringify(name)}: use 1-40 lowercase letters, digits and dashes`);
      if (extraAgents.has(name)) throw new Error(`an extra agent named ${name} is already started`);
      const entry: { proc?: SupervisedProcess } = {};
      extraAgents.set(name, entry);
      const stateDir = join(dataDir, 'agents', name);
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      const agentPort = await freePort();
      const agentAddress = address(agentPort);
      const logPath = join(logDir, `node-agent-${name}.log`);
      const run = async () => {
        if (entry.proc) return;
        progress(`starting node agent ${name} (log: ${logPath})`);
        const proc = await spawnSupervised({
          program: process.execPath,
          args: ['--import', 'tsx', join(repoRoot, 'apps', 'node-agent', 'src', 'main.ts')],
          env: {
            ...common,
            ...envFor['node-agent'],
            AGENT_GRPC_PORT: String(agentPort),
            AGENT_STATE_DIR: stateDir,
            AGENT_NAME: name,
            ...(existsSync(join(stateDir, 'identity.json')) ? {} : { AGENT_REGISTRATION_TOKEN: registrationToken }),
          },
          cwd: repoRoot,
          logPath,
        });
        entry.proc = proc;
        const state = track(proc, logPath);
        await waitFor(`node agent ${name}`, () => agentServing(agentAddress, pki), state, 90_000);
      };
      await run();
      const identity = JSON.parse(readFileSync(join(stateDir, 'identity.json'), 'utf8')) as { hostId: string };
      return {
        name,
        hostId: identity.hostId,
        address: agentAddress,
        stateDir,
        logPath,
        async stop() {
          const proc = entry.proc;
          entry.proc = undefined;
          if (proc) await stopProcess(proc, 10_000);
        },
        start: run,
      };
    };

    return {
      gatewayUrl: `http://${address(ports.gatewayHttp)}`,
      gatewayGrpcAddress: address(ports.gatewayGrpc),
      adminKey,
      databaseUrl,
      natsUrl,
      natsSubjectNamespace,
      busKind,
      databaseKind,
      get localHostId() {
        return localHostId;
      },
      pkiDir: pki?.dir,
      controlPlaneTls: pki?.launcher,
      hostRegistryCredentials: pki?.hostRegistryCredentials,
      controlPlaneCaPin: pki?.caPin,
      natsTls,
      ports,
      get services() {
        return [...running.values()].map((r) => r.service);
      },
      logPath: (name) => join(logDir, `${name}.log`),
      async stopService(name) {
        const entry = running.get(name);
        if (!entry) return;
        await stopProcess(entry.proc, 10_000);
        running.delete(name);
      },
      async killService(name) {
        const entry = running.get(name);
        if (!entry) return;
        const exited = entry.proc.wait();
        entry.proc.kill('SIGKILL');
        await exited;
        running.delete(name);
      },
      async startService(name) {
        if (running.has(name)) return;
        if (name === 'node-agent') await startAgent();
        else await launch(name);
      },
      startAgent,
      startExtraAgent,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * Whether a node agent reports SERVING. With the local CA it is asked over
 * mutual TLS (any host the CA vouches for: the launcher does not know the
 * host id before registration); an agent registered before the CA existed
 * serves plaintext, so that is tried too.
 */
export async function agentServing(agentAddress: string, pki: Pick<LocalPki, 'launcher'> | undefined): Promise<boolean> {
  if (pki) {
    const tls = await checkHealth(agentAddress, '', { deadlineMs: 1000, credentials: mutualTlsProbeCredentials(pki.launcher) }).catch(() => undefined);
    if (tls === 'SERVING') return true;
  }
  return (await checkHealth(agentAddress, '', { deadlineMs: 1000 }).catch(() => undefined)) === 'SERVING';
}

interface TrackedState {
  exited: boolean;
  logPath: string;
}

function track(proc: SupervisedProcess, logPath: string): TrackedState {
  const state: TrackedState = { exited: false, logPath };
  void proc.wait().then(() => (state.exited = true));
  return state;
}

/** SIGTERM, then SIGKILL after `graceMs`. Safe on a process that already exited. */
async function stopProcess(proc: SupervisedProcess, graceMs: number) {
  if (!proc.kill('SIGTERM')) return;
  const exited = proc.wait();
  // Cleared once the process exits: a pending grace timer would keep the
  // caller's event loop (a test run) alive for the rest of it.
  let timer: NodeJS.Timeout | undefined;
  const grace = new Promise((r) => (timer = setTimeout(r, graceMs, 'timeout')));
  try {
    if ((await Promise.race([exited, grace])) === 'timeout') {
      proc.kill('SIGKILL');
      await exited;
    }
  } finally {
    clearTimeout(timer);
  }
}

async function httpOk(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
  return res.ok;
}

async function tcpOpen(host: string, port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolveOpen) => {
    const socket = connect({ host, port }, () => {
      socket.end();
      resolveOpen(true);
    });
    socket.once('error', () => resolveOpen(false));
  });
}
