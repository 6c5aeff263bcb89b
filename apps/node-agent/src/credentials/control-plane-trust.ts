import { readFile } from 'node:fs/promises';
import { FailedPreconditionError, isCorralError } from '@corral/domain';
import { fetchPresentedRootCertificate, serverIdentityChannelCredentials, type ChannelCredentials } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { caCertificatePin, normalizeCaPin } from '@corral/pki';
import { loadIdentity } from '../identity/identity';

// How the agent knows it talks to the real host-registry before it sends a
// registration token or a refresh token (both bearer secrets). The registry
// serves TLS with a certificate from the internal CA naming
// control-plane/host-registry; the agent trusts, in this order:
//   1. AGENT_CONTROL_PLANE_CA_FILE (checked against the pin when both are set);
//   2. the CA kept in identity.json from an earlier first contact;
//   3. AGENT_CONTROL_PLANE_CA_SHA256: like kubeadm's
//      --discovery-token-ca-cert-hash, the CA is read from the registry's
//      TLS handshake, trusted only if its SHA-256 is the pin, then kept in
//      identity.json (with the identity) for every later start;
//   4. plaintext, only with AGENT_ALLOW_INSECURE_CONTROL_PLANE=true (a warning).
// Nothing else: an agent with none of these refuses to start.

export const HOST_REGISTRY_IDENTITY = { kind: 'control-plane', service: 'host-registry' } as const;

export type ControlPlaneTrust =
  | { kind: 'tls'; caCertificatePem: string; source: 'file' | 'identity' | 'pin' }
  | { kind: 'insecure' };

export interface ControlPlaneTrustOptions {
  caFile?: string;
  /** Hex SHA-256 of the CA certificate; '' or undefined for none. */
  caSha256?: string;
  allowInsecure: boolean;
  registryAddress: string;
  stateDir: string;
  logger: Logger;
  /** How long to keep trying to reach the registry for the pinned CA. Default 60 s. */
  retryForMs?: number;
  /** Replaces reading the CA from the handshake (tests). */
  fetchPresentedCa?: (address: string) => Promise<string>;
}

export async function resolveControlPlaneTrust(options: ControlPlaneTrustOptions): Promise<ControlPlaneTrust> {
  const pin = options.caSha256 ? normalizeCaPin(options.caSha256, 'AGENT_CONTROL_PLANE_CA_SHA256') : undefined;
  const mustMatchPin = (pem: string, where: string) => {
    if (pin && caCertificatePin(pem) !== pin) {
      throw new FailedPreconditionError(`${where} is not the CA AGENT_CONTROL_PLANE_CA_SHA256 names (its SHA-256 is ${caCertificatePin(pem)})`);
    }
  };
  if (options.caFile) {
    let pem: string;
    try {
      pem = await readFile(options.caFile, 'utf8');
    } catch (err) {
      throw new FailedPreconditionError(`AGENT_CONTROL_PLANE_CA_FILE: cannot read ${options.caFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    if (!pem.includes('BEGIN CERTIFICATE')) throw new FailedPreconditionError('AGENT_CONTROL_PLANE_CA_FILE is not a PEM certificate');
    mustMatchPin(pem, 'AGENT_CONTROL_PLANE_CA_FILE');
    return { kind: 'tls', caCertificatePem: pem, source: 'file' };
  }
  const stored = (await loadIdentity(options.stateDir))?.controlPlaneCaCertificatePem;
  if (stored) {
    mustMatchPin(stored, 'the CA kept in identity.json');
    return { kind: 'tls', caCertificatePem: stored, source: 'identity' };
  }
  if (pin) {
    const presented = await fetchWithRetry(options);
    if (caCertificatePin(presented) !== pin) {
      // Possibly not our registry at all: nothing is sent to it.
      throw new FailedPreconditionError(
        `host-registry at ${options.registryAddress} presented a CA whose SHA-256 is ${caCertificatePin(presented)}, not AGENT_CONTROL_PLANE_CA_SHA256: refusing to send it any credential`,
      );
    }
    options.logger.info('trusting the control-plane CA host-registry presented: it matches AGENT_CONTROL_PLANE_CA_SHA256', { sha256: pin });
    return { kind: 'tls', caCertificatePem: presented, source: 'pin' };
  }
  if (options.allowInsecure) {
    options.logger.warn(
      'AGENT_ALLOW_INSECURE_CONTROL_PLANE=true: calling host-registry in plaintext; registration and refresh tokens travel unencrypted to a server nobody verified',
    );
    return { kind: 'insecure' };
  }
  throw new FailedPreconditionError(
    'no way to verify host-registry: set AGENT_CONTROL_PLANE_CA_FILE (the control plane CA certificate) or AGENT_CONTROL_PLANE_CA_SHA256 (`corral tls ca pin`), ' +
      'or AGENT_ALLOW_INSECURE_CONTROL_PLANE=true for a development setup in plaintext',
  );
}

/** gRPC credentials for calls to host-registry under `trust`; undefined means plaintext. */
export function registryChannelCredentials(trust: ControlPlaneTrust): ChannelCredentials | undefined {
  return trust.kind === 'tls' ? serverIdentityChannelCredentials(trust.caCertificatePem, HOST_REGISTRY_IDENTITY) : undefined;
}

async function fetchWithRetry(options: ControlPlaneTrustOptions): Promise<string> {
  const fetch = options.fetchPresentedCa ?? ((address: string) => fetchPresentedRootCertificate(address));
  const deadline = Date.now() + (options.retryForMs ?? 60_000);
  let delayMs = 250;
  for (;;) {
    try {
      return await fetch(options.registryAddress);
    } catch (err) {
      if (isCorralError(err)) throw err;
      if (Date.now() + delayMs > deadline) {
        throw new FailedPreconditionError(`could not read the CA from host-registry's TLS handshake at ${options.registryAddress}: ${(err as Error).message}`, { cause: err });
      }
      options.logger.warn('host registry unreachable, retrying to read its CA', { inMs: delayMs, err: (err as Error).message });
      await new Promise((r) => setTimeout(r, delayMs));
      delayMs = Math.min(delayMs * 2, 5000);
    }
  }
}
