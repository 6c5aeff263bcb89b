import {
  experimental,
  ServerCredentials,
  ServerInterceptingCall,
  status,
  type ChannelCredentials,
  type ServerInterceptor,
} from '@grpc/grpc-js';
import { identitiesFromSubjectAltName, identityUri, sameIdentity, type TlsIdentity } from '@corral/pki';
import { identityCheckedSslCredentials } from './tls-server-name';

// Mutual TLS between the control plane and agents, from Corral's internal CA
// (@corral/pki). Both ends present a certificate signed by that CA; on top of
// the chain check, each end checks *who* the other is from the SPIFFE URI in
// its certificate, so a host's certificate can neither pass for another host
// nor call an agent as if it were the control plane.

export interface TlsMaterial {
  caCertificatePem: string;
  certificatePem: string;
  /** A secret: never logged. */
  privateKeyPem: string;
}

/**
 * Server certificates that can be replaced while the server runs (an agent
 * renews its certificate with its JWT): new handshakes use the newest
 * material, open connections keep theirs. Created without material (an
 * agent that has yet to register), the server drops every connection until
 * the first `update`.
 */
export class RotatingCertificateProvider implements experimental.CertificateProvider {
  private material: TlsMaterial | undefined;
  private readonly caListeners = new Set<experimental.CaCertificateUpdateListener>();
  private readonly identityListeners = new Set<experimental.IdentityCertificateUpdateListener>();

  constructor(material?: TlsMaterial) {
    this.material = material;
  }

  get hasMaterial(): boolean {
    return this.material !== undefined;
  }

  update(material: TlsMaterial): void {
    this.material = material;
    for (const listener of this.caListeners) listener(this.caUpdate(material));
    for (const listener of this.identityListeners) listener(this.identityUpdate(material));
  }

  // The first update is delivered on a later tick, as grpc-js's own file
  // watcher does: grpc-js subscribes before it registers the server that
  // waits for the update, so a synchronous one would reach nobody.
  addCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    this.caListeners.add(listener);
    setImmediate(() => this.caListeners.has(listener) && this.material && listener(this.caUpdate(this.material)));
  }

  removeCaCertificateListener(listener: experimental.CaCertificateUpdateListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.add(listener);
    setImmediate(() => this.identityListeners.has(listener) && this.material && listener(this.identityUpdate(this.material)));
  }

  removeIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.delete(listener);
  }

  private caUpdate(material: TlsMaterial): experimental.CaCertificateUpdate {
    return { caCertificate: Buffer.from(material.caCertificatePem) };
  }

  private identityUpdate(material: TlsMaterial): experimental.IdentityCertificateUpdate {
    return { certificate: Buffer.from(material.certificatePem), privateKey: Buffer.from(material.privateKeyPem) };
  }
}

/** Server credentials that refuse, at the handshake, any client without a certificate from the CA. */
export function mutualTlsServerCredentials(provider: RotatingCertificateProvider): ServerCredentials {
  return experimental.createCertificateProviderServerCredentials(provider, provider, true);
}

/**
 * Client credentials that present our certificate and accept the server only
 * if its certificate (chain to the CA) names `expectedPeer`. The host name
 * dialled is not what is checked: agents are dialled by address, and their
 * identity is their host id.
 */
export function mutualTlsChannelCredentials(material: TlsMaterial, expectedPeer: TlsIdentity): ChannelCredentials {
  return identityCheckedSslCredentials(material.caCertificatePem, material.privateKeyPem, material.certificatePem, (_host, certificate) => {
    const presented = identitiesFromSubjectAltName(certificate.subjectaltname);
    if (presented.some((identity) => sameIdentity(identity, expectedPeer))) return undefined;
    return new Error(`the server's certificate does not name ${identityUri(expectedPeer)}`);
  });
}

/**
 * Client credentials for a health probe that does not know which host will
 * answer (a launcher waiting for an agent that is still registering): the
 * server's certificate must chain to the CA and name *some* host, and only
 * the open methods (health) will answer a caller like this anyway unless it
 * holds a control-plane certificate.
 */
export function mutualTlsProbeCredentials(material: TlsMaterial): ChannelCredentials {
  return identityCheckedSslCredentials(material.caCertificatePem, material.privateKeyPem, material.certificatePem, (_host, certificate) => {
    if (identitiesFromSubjectAltName(certificate.subjectaltname).some((identity) => identity.kind === 'host')) return undefined;
    return new Error("the server's certificate names no host");
  });
}

/** Methods any peer with a certificate from the CA may call (so a launcher or monitor can probe health). */
const OPEN_TO_ANY_PEER = ['/grpc.health.v1.Health/', '/grpc.reflection.'];

/**
 * A server interceptor that lets a call through only when the client's
 * certificate names an identity `allowed` accepts. Fixed messages: nothing
 * about the presented certificate is echoed.
 */
export function requirePeerIdentity(allowed: (identities: TlsIdentity[], method: string) => boolean): ServerInterceptor {
  return (methodDescriptor, call) =>
    new ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, forward) => {
            const method = methodDescriptor.path;
            if (OPEN_TO_ANY_PEER.some((prefix) => method.startsWith(prefix))) {
              forward(metadata);
              return;
            }
            const certificate = call.getAuthContext()?.sslPeerCertificate;
            if (!certificate) {
              call.sendStatus({ code: status.UNAUTHENTICATED, details: 'a client certificate is required' });
              return;
            }
            if (!allowed(identitiesFromSubjectAltName(certificate.subjectaltname), method)) {
              call.sendStatus({ code: status.PERMISSION_DENIED, details: 'this certificate may not call this service' });
              return;
            }
            forward(metadata);
          },
        });
      },
    });
}

/** Only control-plane services may call (the agent's rule). */
export function controlPlaneOnly(): ServerInterceptor {
  return requirePeerIdentity((identities) => identities.some((identity) => identity.kind === 'control-plane'));
}
