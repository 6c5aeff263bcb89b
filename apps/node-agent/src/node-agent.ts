import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { UnavailableError, instanceStateToProto } from '@corral/domain';
import { connectEventBus, type EventBus } from '@corral/events';
import {
  controlPlaneOnly,
  createClient,
  mutualTlsServerCredentials,
  RotatingCertificateProvider,
  serviceNameOf,
  startGrpcServer,
  type RunningGrpcServer,
} from '@corral/grpc';
import { createLogger, type Logger } from '@corral/logging';
import { agentV1, hostRegistryV1 } from '@corral/proto';
import type { NodeAgentConfig } from './config';
import { CredentialRefresher, type RefreshHostCredentials } from './credentials/credential-refresher';
import { hasPause, type Driver } from './drivers/driver';
import { DriverRegistry } from './drivers/driver-registry';
import { PodmanDriver } from './drivers/podman';
import { QemuDriver } from './drivers/qemu';
import { PROCESS_DRIVER_NAME, ProcessDriver } from './drivers/process/process-driver';
import { nodeAgentService } from './grpc/node-agent-service';
import { startHeartbeats, type Heartbeater } from './heartbeat/heartbeater';
import { measureCapacity, measureUsage } from './host/host-resources';
import { PortAllocator } from './ports';
import { assertCanIdentify, ensureIdentity, loadIdentity, type HostIdentity, type RegisterHost } from './identity/identity';
import { ensureTlsKey, TLS_KEY_FILE, tlsMaterialOf } from './identity/tls-key';
import { ensurePrivateDir } from './state/atomic-file';
import { WorkloadSupervisor } from './workloads/workload-supervisor';

export interface NodeAgentDeps {
  logger?: Logger;
  /** Used instead of connecting to NATS_URL; the caller keeps ownership (it is not closed). */
  bus?: Pick<EventBus, 'publish'>;
  /** Replaces the gRPC call to HOST_REGISTRY_ADDR. */
  registerHost?: RegisterHost;
  /** Replaces the gRPC RefreshHostCredentials call to HOST_REGISTRY_ADDR. */
  refreshHostCredentials?: RefreshHostCredentials;
  /** Skips registration and runs as this host (tests). */
  hostId?: string;
  /** Replaces the built-in drivers (tests pass a fake). */
  drivers?: Driver[];
}

export interface RunningNodeAgent {
  hostId: string;
  /** host:port the gRPC server is bound to. */
  address: string;
  /** host:port announced to the control plane. */
  advertisedAddress: string;
  bootId: string;
  supervisor: WorkloadSupervisor;
  /** Keeps the host token fresh; undefined when running as `deps.hostId`. */
  credentials?: CredentialRefresher;
  /** Whether the gRPC server requires mutual TLS (the host has a certificate from the registry's CA). */
  mutualTls: boolean;
  /**
   * Stops heartbeats, the gRPC server and the bus. Workloads keep running:
   * the next agent process re-adopts them.
   */
  stop(): Promise<void>;
}

/**
 * Starts a node agent: gRPC server (reporting NOT_SERVING until ready),
 * registration (or the stored identity), re-adoption of the workloads of a
 * previous run, then heartbeats.
 */
export async function startNodeAgent(config: NodeAgentConfig, deps: NodeAgentDeps = {}): Promise<RunningNodeAgent> {
  const logger = deps.logger ?? createLogger({ service: 'node-agent', level: config.logLevel });
  const stateDir = resolve(config.stateDir);
  await ensurePrivateDir(stateDir);
  if (!deps.hostId) await assertCanIdentify(stateDir, config.registrationToken);

  const cleanups: Array<() => Promise<void>> = [];
  const drivers = new DriverRegistry(logger);
  for (const driver of deps.drivers ?? builtInDrivers(config, stateDir, logger)) {
    drivers.register(driver);
    // Drivers with background work (podman's exit poller) release it on stop.
    const closable = driver as Driver & { close?: () => Promise<void> };
    if (typeof closable.close === 'function') cleanups.push(() => closable.close!());
  }
  if (!deps.drivers && !config.enableProcessDriver) {
    drivers.markUnavailable(PROCESS_DRIVER_NAME, 'disabled (set AGENT_ENABLE_PROCESS_DRIVER=true to enable it)');
  }

  const cleanUp = async () => {
    for (const step of cleanups.splice(0).reverse()) {
      await step().catch((err) => logger.error('error while stopping the node agent', { err }));
    }
  };

  try {
    let bus: Pick<EventBus, 'publish'>;
    if (deps.bus) {
      bus = deps.bus;
    } else {
      const owned = await connectEventBus({ url: config.natsUrl, name: 'corral-node-agent', logger });
      cleanups.push(() => owned.drain().catch(() => owned.close()));
      bus = owned;
    }

    // Mutual TLS: with a stored certificate the server requires it from the
    // start; a host about to register starts with none (every connection is
    // dropped until registration brings one); a host registered without one
    // (the registry has no CA) serves plaintext.
    const tlsKey = deps.hostId ? undefined : await ensureTlsKey(stateDir);
    const stored = deps.hostId ? undefined : await loadIdentity(stateDir);
    let certificates: RotatingCertificateProvider | undefined;
    if (tlsKey && (!stored || stored.tls)) certificates = new RotatingCertificateProvider(tlsMaterialOf(stored, tlsKey));
    if (stored && !stored.tls) warnPlaintext(logger, stored.hostId);

    // Set once ready; requests before that are answered UNAVAILABLE.
    let supervisor: WorkloadSupervisor | undefined = undefined;
    const serve = (port: number, tls: RotatingCertificateProvider | undefined) => startGrpcServer({
      host: config.grpcHost,
      port,
      logger,
      ...(tls ? { credentials: mutualTlsServerCredentials(tls), interceptors: [controlPlaneOnly()] } : {}),
      services: [
        {
          definition: agentV1.NodeAgentServiceService,
          implementation: nodeAgentService({
            supervisor: () => {
              if (!supervisor) throw new UnavailableError('the node agent is still starting');
              return supervisor;
            },
            drivers,
            capacity: () => measureCapacity(stateDir),
            logger,
            limits: {
              fileMaxBytes: config.fileMaxBytes,
              bufferedStdinMaxBytes: config.execBufferedStdinMaxBytes,
              bufferedTimeoutMs: config.execBufferedTimeoutMs,
            },
            images: { imageMaxBytes: config.imageMaxBytes, spoolDir: join(stateDir, 'image-imports') },
          }),
        },
      ],
    });
    let server: RunningGrpcServer = await serve(config.grpcPort, certificates);
    // Not ready until registered and recovered: whoever waits on health
    // (the launcher, a load balancer) must not see SERVING before the
    // identity exists. This runs before any request can be handled.
    setServing(server, false);
    cleanups.push(() => server.stop());

    const advertisedAddress = config.advertiseAddress ?? advertisedAddressOf(config.grpcHost, server.port);
    let hostId = deps.hostId;
    let identity: HostIdentity | undefined;
    if (!hostId) {
      const ensured = await ensureIdentity({
        stateDir,
        registrationToken: config.registrationToken,
        name: config.name,
        agentAddress: advertisedAddress,
        describeHost: async () => ({ capacity: await measureCapacity(stateDir), drivers: await drivers.fingerprints(0) }),
        register: deps.registerHost ?? registryClient(config.hostRegistryAddress),
        csr: tlsKey?.csrPem,
        logger,
      });
      identity = ensured.identity;
      hostId = identity.hostId;
      if (ensured.registered) logger.info('registered with the host registry', { hostId, mutualTls: identity.tls !== undefined });
      if (certificates && !certificates.hasMaterial) {
        const material = tlsMaterialOf(identity, tlsKey);
        if (material) {
          certificates.update(material);
        } else if (identity.tls) {
          logger.warn(`the stored TLS certificate is not for ${TLS_KEY_FILE} (was the key file replaced?): connections are refused until the next credential refresh renews it`, {
            hostId,
          });
        } else {
          // The registry has no CA: serve plaintext on the same port (the
          // address just registered) rather than drop every connection.
          warnPlaintext(logger, hostId);
          const port = server.port;
          await server.stop();
          certificates = undefined;
          server = await serve(port, undefined);
          setServing(server, false);
        }
      }
    }

    const ports = new PortAllocator({ stateDir, logger, range: config.portRange });
    const ready = new WorkloadSupervisor({ hostId, stateDir, drivers, bus, logger, ports });
    await ready.recover();
    supervisor = ready;
    cleanups.push(() => ready.close());

    let credentials: CredentialRefresher | undefined;
    if (identity) {
      const refresher = new CredentialRefresher({
        stateDir,
        identity,
        refresh: deps.refreshHostCredentials ?? refreshClient(config.hostRegistryAddress),
        logger,
        policy: config.credentialFailurePolicy,
        workloads: ready,
        canPause: (name) => {
          const driver = drivers.find(name);
          return driver !== undefined && hasPause(driver);
        },
        csr: tlsKey?.csrPem,
        // Persisted by now: new handshakes get the renewed certificate, open
        // connections keep theirs.
        onRefreshed: (next) => {
          const material = tlsMaterialOf(next, tlsKey);
          if (!material) return;
          if (certificates) certificates.update(material);
          else logger.warn('the host registry now issues TLS certificates: restart the agent to serve mutual TLS', { hostId: next.hostId });
        },
      });
      refresher.start();
      cleanups.push(() => refresher.stop());
      credentials = refresher;
    }

    const heartbeats: Heartbeater = startHeartbeats({
      bus,
      hostId,
      intervalMs: config.heartbeatIntervalMs,
      logger,
      // Hosts run in tests without an identity (deps.hostId) send none.
      hostToken: () => credentials?.identity.hostToken ?? identity?.hostToken ?? '',
      collect: async () => ({
        capacity: await measureCapacity(stateDir),
        usage: await measureUsage(stateDir),
        drivers: await drivers.fingerprints(),
        workloads: ready.list().map((w) => ({ workloadId: w.workloadId, state: instanceStateToProto(w.state) })),
        agentAddress: advertisedAddress,
      }),
    });
    cleanups.push(() => heartbeats.stop());

    setServing(server, true);
    logger.info('node agent ready', { hostId, address: server.address, advertisedAddress, bootId: heartbeats.bootId });

    let stopping: Promise<void> | undefined;
    return {
      hostId,
      address: server.address,
      advertisedAddress,
      bootId: heartbeats.bootId,
      supervisor: ready,
      credentials,
      mutualTls: certificates !== undefined,
      stop: () => (stopping ??= cleanUp()),
    };
  } catch (err) {
    await cleanUp();
    throw err;
  }
}

function builtInDrivers(config: NodeAgentConfig, stateDir: string, logger: Logger): Driver[] {
  const drivers: Driver[] = [];
  if (config.enableProcessDriver) drivers.push(new ProcessDriver({ rootDir: join(stateDir, 'process'), logger }));
  if (config.enablePodmanDriver) drivers.push(new PodmanDriver({ logger, program: config.podmanProgram }));
  if (config.enableQemuDriver) {
    drivers.push(
      new QemuDriver({
        accelerator: config.qemuAccelerator,
        stateDir: join(stateDir, 'qemu'),
        defaultMemoryMb: config.qemuDefaultMemoryMb,
        defaultVcpus: config.qemuDefaultVcpus,
        logger,
      }),
    );
  }
  return drivers;
}

function registryClient(address: string): RegisterHost {
  return async (request) => {
    const client = createClient(hostRegistryV1.HostRegistryServiceClient, address, { deadlineMs: 10_000 });
    try {
      return await client.registerHost(request);
    } finally {
      client.close();
    }
  };
}

function refreshClient(address: string): RefreshHostCredentials {
  return async (request) => {
    const client = createClient(hostRegistryV1.HostRegistryServiceClient, address, { deadlineMs: 10_000 });
    try {
      return await client.refreshHostCredentials(request);
    } finally {
      client.close();
    }
  };
}

function warnPlaintext(logger: Logger, hostId: string): void {
  logger.warn('serving gRPC in plaintext: the host registry issued this host no TLS certificate (it has no CORRAL_CA_CERT_FILE); anyone who can reach the port can call the agent', {
    hostId,
  });
}

/** A wildcard bind address is not something another host can dial. */
export function advertisedAddressOf(host: string, port: number): string {
  const dialable = host === '0.0.0.0' || host === '::' || host === '[::]' ? hostname() : host;
  return `${dialable.includes(':') && !dialable.startsWith('[') ? `[${dialable}]` : dialable}:${port}`;
}

function setServing(server: RunningGrpcServer, serving: boolean): void {
  const status = serving ? 'SERVING' : 'NOT_SERVING';
  server.health.setStatus('', status);
  server.health.setStatus(serviceNameOf(agentV1.NodeAgentServiceService), status);
}
