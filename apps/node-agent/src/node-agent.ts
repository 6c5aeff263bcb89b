import { stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { UnavailableError, instanceStateToProto } from '@corral/domain';
import { connectEventBus, natsTlsOf, type EventBus } from '@corral/events';
import {
  controlPlaneOnly,
  mutualTlsServerCredentials,
  RotatingCertificateProvider,
  serviceNameOf,
  startGrpcServer,
  type RunningGrpcServer,
} from '@corral/grpc';
import { createLogger, type Logger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import type { NodeAgentConfig } from './config';
import { resolveControlPlaneTrust, registryChannelCredentials } from './credentials/control-plane-trust';
import { refreshOnCredentialNotices } from './credentials/credential-notices';
import { CredentialRefresher, type RefreshHostCredentials } from './credentials/credential-refresher';
import { refreshClient, registryClient } from './credentials/registry-client';
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
import { selectVolumeManager, type VolumeManagerSelection } from './volumes';
import { WorkloadSupervisor } from './workloads/workload-supervisor';

export interface NodeAgentDeps {
  logger?: Logger;
  /**
   * Used instead of connecting to NATS_URL; the caller keeps ownership (it
   * is not closed). One that can subscribe also carries this host's notices.
   */
  bus?: Pick<EventBus, 'publish'> & Partial<Pick<EventBus, 'subscribe'>>;
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
  // VM root disks are cloned by the volume manager (qemu is the only driver
  // that takes disks); chosen first so the qemu fingerprint can say which.
  const volumesDir = config.volumesDir ? resolve(config.volumesDir) : stateDir;
  let volumes: VolumeManagerSelection | undefined;
  if (config.enableQemuDriver && !deps.drivers) {
    await ensurePrivateDir(volumesDir);
    volumes = selectVolumeManager({ stateDir: volumesDir, logger, ...(config.volumeBackend !== 'auto' ? { force: config.volumeBackend } : {}) });
  }
  const drivers = new DriverRegistry(logger);
  for (const driver of deps.drivers ?? builtInDrivers(config, stateDir, logger, volumes)) {
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
    let bus: Pick<EventBus, 'publish'> & Partial<Pick<EventBus, 'subscribe'>>;
    if (deps.bus) {
      bus = deps.bus;
    } else {
      const owned = await connectEventBus({
        url: config.natsUrl,
        name: 'corral-node-agent',
        logger,
        tls: natsTlsOf(config),
        namespace: config.natsSubjectNamespace,
      });
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
            imagePulls: {
              policy: { allowed: config.imageAllowedRegistries, insecure: config.imageInsecureRegistries },
              authDir: join(stateDir, 'image-pulls'),
              timeoutMs: config.imagePullTimeoutMs,
            },
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
    // The registration and refresh tokens go only to a host-registry the
    // agent has verified (control-plane-trust.ts), unless plaintext is allowed.
    const trust =
      !hostId && !(deps.registerHost && deps.refreshHostCredentials)
        ? await resolveControlPlaneTrust({
            caFile: config.controlPlaneCaFile,
            caSha256: config.controlPlaneCaSha256,
            allowInsecure: config.allowInsecureControlPlane,
            registryAddress: config.hostRegistryAddress,
            stateDir,
            logger,
          })
        : undefined;
    const registryCredentials = trust ? registryChannelCredentials(trust) : undefined;
    if (!hostId) {
      const ensured = await ensureIdentity({
        stateDir,
        registrationToken: config.registrationToken,
        name: config.name,
        agentAddress: advertisedAddress,
        describeHost: async () => ({ capacity: await measureCapacity(stateDir), drivers: await drivers.fingerprints(0) }),
        register: deps.registerHost ?? registryClient(config.hostRegistryAddress, registryCredentials),
        csr: tlsKey?.csrPem,
        ...(trust?.kind === 'tls' && trust.source === 'pin' ? { controlPlaneCa: trust.caCertificatePem } : {}),
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

    let credentials: CredentialRefresher | undefined;
    // Hosts run in tests without an identity (deps.hostId) send none.
    const currentHostToken = () => credentials?.identity.hostToken ?? identity?.hostToken ?? '';
    if (volumes) {
      // Finishes or rolls back clones a crash cut short, before any workload is touched.
      const report = await volumes.manager.reconcile();
      if (Object.values(report).some((ids) => ids.length > 0)) logger.info('volumes reconciled', { ...report });
    }
    const ports = new PortAllocator({ stateDir, logger, range: config.portRange });
    const ready = new WorkloadSupervisor({
      hostId,
      stateDir,
      drivers,
      bus,
      logger,
      ports,
      hostToken: currentHostToken,
      ...(volumes ? { volumes: volumes.manager } : {}),
    });
    await ready.recover();
    supervisor = ready;
    cleanups.push(() => ready.close());

    if (identity) {
      const refresher = new CredentialRefresher({
        stateDir,
        identity,
        refresh: deps.refreshHostCredentials ?? refreshClient(config.hostRegistryAddress, registryCredentials),
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
      // Refused heartbeats or state events: refresh now, not at the next scheduled time.
      const subscribe = bus.subscribe?.bind(bus);
      if (subscribe) {
        const notices = refreshOnCredentialNotices({ bus: { subscribe }, hostId, refresher, logger });
        cleanups.push(async () => notices.unsubscribe());
      }
    }

    const heartbeats: Heartbeater = startHeartbeats({
      bus,
      hostId,
      intervalMs: config.heartbeatIntervalMs,
      logger,
      hostToken: currentHostToken,
      collect: async () => ({
        capacity: await measureCapacity(stateDir),
        usage: await diskUsageWithVolumes(stateDir, volumesDir),
        drivers: await drivers.currentFingerprints(),
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

/**
 * The host's usage; disk is the blocks in use on the state dir's file
 * system, plus those of the volumes dir's when that is another one (root
 * disk clones count by their allocated blocks, not their virtual size).
 */
async function diskUsageWithVolumes(stateDir: string, volumesDir: string) {
  const usage = await measureUsage(stateDir);
  if (volumesDir === stateDir) return usage;
  const [state, vols] = await Promise.all([stat(stateDir), stat(volumesDir)]);
  if (state.dev === vols.dev) return usage;
  return { ...usage, diskMb: usage.diskMb + (await measureUsage(volumesDir)).diskMb };
}

function builtInDrivers(config: NodeAgentConfig, stateDir: string, logger: Logger, volumes?: VolumeManagerSelection): Driver[] {
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
        ...(volumes ? { rootDisks: volumes.capability } : {}),
      }),
    );
  }
  return drivers;
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
