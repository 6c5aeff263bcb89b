import { join } from 'node:path';
import { FailedPreconditionError, isCorralError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { DriverFingerprint, Resources, hostRegistryV1 } from '@corral/proto';
import { readJsonFile, writeJsonAtomic } from '../state/atomic-file';

// Who this host is to the control plane. Registration happens once, with a
// single-use token; the identity it yields is kept in the state dir so the
// agent restarts as the same host.

export interface HostIdentity {
  hostId: string;
  /** Bearer credential; the file holding it is private to the agent's user. */
  hostToken: string;
  expiresAt?: string;
  registeredAt: string;
  /**
   * Single-use secret for RefreshHostCredentials, replaced on every refresh.
   * Absent in files written before agents refreshed: such an agent cannot
   * refresh until it is registered again.
   */
  refreshToken?: string;
  refreshTokenExpiresAt?: string;
  /** When this agent received `hostToken` (its own clock): start of the JWT lifetime. */
  tokenIssuedAt?: string;
  /**
   * The mutual-TLS certificate the registry's CA issued for this host (its
   * key is in tls-key.pem). Absent when the registry has no CA: the agent
   * then serves plaintext.
   */
  tls?: HostTlsCertificate;
  /**
   * The CA host-registry's TLS certificate chains to, trusted at first
   * contact through AGENT_CONTROL_PLANE_CA_SHA256 and kept for every later
   * start (see credentials/control-plane-trust.ts).
   */
  controlPlaneCaCertificatePem?: string;
}

export interface HostTlsCertificate {
  certificatePem: string;
  caCertificatePem: string;
  expiresAt?: string;
}

/** The certificate in a RegisterHost or RefreshHostCredentials answer, if any. */
export function tlsCertificateOf(certificate: hostRegistryV1.HostCertificate | undefined): HostTlsCertificate | undefined {
  if (!certificate?.certificate || !certificate.caCertificate) return undefined;
  return { certificatePem: certificate.certificate, caCertificatePem: certificate.caCertificate, expiresAt: certificate.expiresAt?.toISOString() };
}

export const IDENTITY_FILE = 'identity.json';

export type RegisterHost = (request: hostRegistryV1.RegisterHostRequest) => Promise<hostRegistryV1.RegisterHostResponse>;

export interface RegistrationOptions {
  stateDir: string;
  /** AGENT_REGISTRATION_TOKEN; only needed when there is no identity yet. */
  registrationToken?: string;
  name: string;
  agentAddress: string;
  /** Measured only when registering. */
  describeHost(): Promise<{ capacity: Resources; drivers: DriverFingerprint[] }>;
  register: RegisterHost;
  /** Sent so the registry issues this host a mutual-TLS certificate. */
  csr?: string;
  /** A control-plane CA trusted through its pin: kept in the identity (also added to a stored one). */
  controlPlaneCa?: string;
  logger: Logger;
  /** How long to keep retrying while the host registry is unreachable. Default 60 s. */
  retryForMs?: number;
  signal?: AbortSignal;
}

export function identityPath(stateDir: string): string {
  return join(stateDir, IDENTITY_FILE);
}

export async function loadIdentity(stateDir: string): Promise<HostIdentity | undefined> {
  const identity = await readJsonFile<HostIdentity>(identityPath(stateDir));
  if (identity && (typeof identity.hostId !== 'string' || !identity.hostId)) {
    throw new FailedPreconditionError(`${identityPath(stateDir)} has no hostId: remove it and register again with AGENT_REGISTRATION_TOKEN`);
  }
  return identity;
}

export async function saveIdentity(stateDir: string, identity: HostIdentity): Promise<void> {
  await writeJsonAtomic(identityPath(stateDir), identity);
}

/**
 * The stored identity, or a new one from RegisterHost. Retries while the
 * host registry is unavailable (it may be starting alongside the agent);
 * a refused token fails at once.
 */
export async function ensureIdentity(options: RegistrationOptions): Promise<{ identity: HostIdentity; registered: boolean }> {
  const stored = await loadIdentity(options.stateDir);
  if (stored) {
    if (stored.expiresAt && Date.parse(stored.expiresAt) < Date.now()) {
      options.logger.warn('stored host token has expired', { hostId: stored.hostId, expiresAt: stored.expiresAt });
    }
    if (options.controlPlaneCa && stored.controlPlaneCaCertificatePem !== options.controlPlaneCa) {
      const updated = { ...stored, controlPlaneCaCertificatePem: options.controlPlaneCa };
      await saveIdentity(options.stateDir, updated);
      return { identity: updated, registered: false };
    }
    return { identity: stored, registered: false };
  }
  if (!options.registrationToken) throw notRegisteredError(options.stateDir);
  const { capacity, drivers } = await options.describeHost();
  const request: hostRegistryV1.RegisterHostRequest = {
    registrationToken: options.registrationToken,
    name: options.name,
    agentAddress: options.agentAddress,
    capacity,
    drivers,
    labels: {},
    ...(options.csr ? { csr: options.csr } : {}),
  };
  const response = await withRetry(() => options.register(request), options);
  const identity: HostIdentity = {
    hostId: response.hostId,
    hostToken: response.hostToken,
    expiresAt: response.hostTokenExpiresAt?.toISOString(),
    registeredAt: new Date().toISOString(),
    ...(response.refreshToken ? { refreshToken: response.refreshToken, refreshTokenExpiresAt: response.refreshTokenExpiresAt?.toISOString() } : {}),
  };
  const tls = tlsCertificateOf(response.certificate);
  if (tls) identity.tls = tls;
  if (options.controlPlaneCa) identity.controlPlaneCaCertificatePem = options.controlPlaneCa;
  identity.tokenIssuedAt = identity.registeredAt;
  await saveIdentity(options.stateDir, identity);
  return { identity, registered: true };
}

/**
 * Fails at once when the agent could neither reuse an identity nor
 * register, before it connects to anything.
 */
export async function assertCanIdentify(stateDir: string, registrationToken: string | undefined): Promise<void> {
  if (!registrationToken && !(await loadIdentity(stateDir))) throw notRegisteredError(stateDir);
}

function notRegisteredError(stateDir: string): FailedPreconditionError {
  return new FailedPreconditionError(
    `this agent is not registered (no ${identityPath(stateDir)}) and AGENT_REGISTRATION_TOKEN is not set: ` +
      'create a registration token with the control plane and start the agent with AGENT_REGISTRATION_TOKEN=<token>',
  );
}

const RETRYABLE = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED']);

async function withRetry<T>(call: () => Promise<T>, options: RegistrationOptions): Promise<T> {
  const deadline = Date.now() + (options.retryForMs ?? 60_000);
  let delayMs = 250;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      if (!isCorralError(err) || !RETRYABLE.has(err.code)) {
        throw new FailedPreconditionError(`host registration was refused: ${(err as Error).message} (check AGENT_REGISTRATION_TOKEN)`, { cause: err });
      }
      if (Date.now() + delayMs > deadline || options.signal?.aborted) {
        throw new FailedPreconditionError(`host registry unreachable, registration gave up: ${err.message}`, { cause: err });
      }
      options.logger.warn('host registry unreachable, retrying registration', { inMs: delayMs, err: err.message });
      await new Promise((r) => setTimeout(r, delayMs));
      delayMs = Math.min(delayMs * 2, 5000);
    }
  }
}
