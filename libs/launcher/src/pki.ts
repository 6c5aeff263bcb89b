import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { caCertificatePin, caFilesIn, createCaFiles, issueControlPlaneCertificateFiles } from '@corral/pki';
import { serverIdentityChannelCredentials, type ChannelCredentials, type TlsMaterial } from '@corral/grpc';

// Mutual TLS for the local system, on by default: the CA is created once
// under <dataDir>/pki (its key 0600) and kept across starts, so agents'
// stored certificates stay valid; the scheduler's client certificate, the
// launcher's own (for waiting on the agent's health) and the server
// certificate of the launcher's own nats-server are re-issued on every
// start, so they never run out. host-registry issues its own server
// certificate from the CA; every caller verifies it by this CA.

export interface LocalPki {
  dir: string;
  /** For host-registry: it issues hosts' certificates. */
  hostRegistryEnv: Record<string, string>;
  /** For the scheduler: its control-plane certificate towards agents. */
  schedulerEnv: Record<string, string>;
  /** For the reconciler: its control-plane certificate towards agents (reaping orphans, listing runtimes). */
  reconcilerEnv: Record<string, string>;
  /** The launcher's control-plane certificate (service `launcher`), for health probes. */
  launcher: TlsMaterial;
  /** For services calling host-registry (which serves TLS from this CA): the CA to verify it by. */
  hostRegistryClientEnv: Record<string, string>;
  /** For node agents: the CA host-registry's certificate must chain to. */
  agentEnv: Record<string, string>;
  /** The launcher's own calls to host-registry. */
  hostRegistryCredentials: ChannelCredentials;
  /** Hex SHA-256 of the CA certificate (AGENT_CONTROL_PLANE_CA_SHA256 for hosts that have only the pin). */
  caPin: string;
  /** The server certificate of a nats-server the launcher starts itself (control-plane/nats, 127.0.0.1 and localhost). */
  natsServer: { certFile: string; keyFile: string; caFile: string };
  /** For every service connecting to that nats-server. */
  natsClientEnv: Record<string, string>;
}

/** Lifetime of the control-plane certificates the launcher issues; renewed at 2/3 of it while the system runs. */
export const CONTROL_PLANE_CERTIFICATE_DAYS = 30;

export async function ensureLocalPki(dataDir: string): Promise<LocalPki> {
  const dir = join(dataDir, 'pki');
  const ca = await createCaFiles(dir, { reuseExisting: true, commonName: 'Corral local CA' });
  const scheduler = await issueControlPlaneCertificateFiles({ caDir: dir, outDir: dir, service: 'scheduler', validForDays: CONTROL_PLANE_CERTIFICATE_DAYS });
  const launcher = await issueControlPlaneCertificateFiles({ caDir: dir, outDir: dir, service: 'launcher', validForDays: CONTROL_PLANE_CERTIFICATE_DAYS });
  const nats = await issueControlPlaneCertificateFiles({ caDir: dir, outDir: dir, service: 'nats', validForDays: CONTROL_PLANE_CERTIFICATE_DAYS, usages: ['server'], names: ['127.0.0.1', 'localhost'] });
  const caPem = readFileSync(ca.certificateFile, 'utf8');
  const reconciler = await issueControlPlaneCertificateFiles({ caDir: dir, outDir: dir, service: 'reconciler', validForDays: CONTROL_PLANE_CERTIFICATE_DAYS });
  return {
    dir,
    hostRegistryEnv: { CORRAL_CA_CERT_FILE: ca.certificateFile, CORRAL_CA_KEY_FILE: ca.privateKeyFile },
    schedulerEnv: { AGENT_TLS_CA_FILE: scheduler.caCertificateFile, AGENT_TLS_CERT_FILE: scheduler.certificateFile, AGENT_TLS_KEY_FILE: scheduler.privateKeyFile },
    reconcilerEnv: { AGENT_TLS_CA_FILE: reconciler.caCertificateFile, AGENT_TLS_CERT_FILE: reconciler.certificateFile, AGENT_TLS_KEY_FILE: reconciler.privateKeyFile },
    hostRegistryClientEnv: { HOST_REGISTRY_CA_FILE: ca.certificateFile },
    agentEnv: { AGENT_CONTROL_PLANE_CA_FILE: ca.certificateFile },
    hostRegistryCredentials: serverIdentityChannelCredentials(caPem, { kind: 'control-plane', service: 'host-registry' }),
    caPin: caCertificatePin(caPem),
    natsServer: { certFile: nats.certificateFile, keyFile: nats.privateKeyFile, caFile: ca.certificateFile },
    natsClientEnv: { NATS_TLS_CA_FILE: ca.certificateFile },
    launcher: {
      caCertificatePem: readFileSync(caFilesIn(dir).certificateFile, 'utf8'),
      certificatePem: readFileSync(launcher.certificateFile, 'utf8'),
      privateKeyPem: readFileSync(launcher.privateKeyFile, 'utf8'),
    },
  };
}

/**
 * Re-issues the client certificates of the scheduler, the reconciler and
 * the launcher into the same files (each written whole, by rename; the
 * scheduler picks its up without a restart, see ReloadingTlsMaterial), and
 * swaps the launcher's own material in place. The nats-server certificate
 * is not renewed here: nats-server reads it at start (a 30-day run needs a
 * restart of it).
 */
export async function renewControlPlaneCertificates(pki: Pick<LocalPki, 'dir' | 'launcher'>, now = new Date()): Promise<void> {
  const issue = (service: string) => issueControlPlaneCertificateFiles({ caDir: pki.dir, outDir: pki.dir, service, validForDays: CONTROL_PLANE_CERTIFICATE_DAYS, now });
  await issue('scheduler');
  await issue('reconciler');
  const launcher = await issue('launcher');
  pki.launcher.certificatePem = readFileSync(launcher.certificateFile, 'utf8');
  pki.launcher.privateKeyPem = readFileSync(launcher.privateKeyFile, 'utf8');
}

export interface RenewalTimer {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimer: RenewalTimer = {
  set: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    // Renewal must not keep a stopping launcher alive.
    timer.unref?.();
    return timer;
  },
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Renews the control-plane certificates at 2/3 of their lifetime, again and again, until stopped. */
export function scheduleControlPlaneRenewal(
  pki: Pick<LocalPki, 'dir' | 'launcher'>,
  options: { onRenewed?: () => void; onError?: (err: Error) => void; timer?: RenewalTimer } = {},
): { stop(): void } {
  const timer = options.timer ?? realTimer;
  const everyMs = Math.round((CONTROL_PLANE_CERTIFICATE_DAYS * 86_400_000 * 2) / 3);
  let handle: unknown;
  let stopped = false;
  const arm = (ms: number) => {
    if (!stopped) handle = timer.set(run, ms);
  };
  const run = () => {
    renewControlPlaneCertificates(pki).then(
      () => {
        options.onRenewed?.();
        arm(everyMs);
      },
      (err: Error) => {
        options.onError?.(err);
        // Retry well before the current certificates run out.
        arm(3_600_000);
      },
    );
  };
  arm(everyMs);
  return {
    stop() {
      stopped = true;
      if (handle !== undefined) timer.clear(handle);
    },
  };
}
