import { RotatingCertificateProvider, serverTlsCredentials, type ServerCredentials } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { issueControlPlaneServerCertificate, type CertificateAuthority } from '@corral/pki';

// host-registry holds the internal CA (it issues hosts' certificates), so it
// issues its own server certificate in memory at start —
// control-plane/host-registry plus the names it is reached by — and renews
// it at two thirds of its lifetime into the rotating provider: new
// handshakes get the renewed one, no file and no restart. Agents' calls
// (RegisterHost with the registration token, RefreshHostCredentials with the
// refresh token) and the control plane's travel encrypted to a server they
// have verified. No client certificate is asked for: agents register
// before they have one; their token is the credential.

export const HOST_REGISTRY_SERVICE_IDENTITY = 'host-registry';
const SERVER_CERTIFICATE_TTL_SECONDS = 7 * 86_400;
const RETRY_RENEWAL_MS = 60_000;

export class RegistryServerTls {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  private constructor(
    private readonly authority: CertificateAuthority,
    private readonly names: string[],
    private readonly logger: Logger,
    readonly provider: RotatingCertificateProvider,
    notAfter: Date,
  ) {
    this.schedule(notAfter);
  }

  static async start(authority: CertificateAuthority, options: { names: string[]; logger: Logger }): Promise<RegistryServerTls> {
    const issued = await issueControlPlaneServerCertificate(authority, {
      service: HOST_REGISTRY_SERVICE_IDENTITY,
      names: options.names,
      validForSeconds: SERVER_CERTIFICATE_TTL_SECONDS,
    });
    return new RegistryServerTls(authority, options.names, options.logger, new RotatingCertificateProvider(issued), issued.notAfter);
  }

  credentials(): ServerCredentials {
    return serverTlsCredentials(this.provider);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(notAfter: Date): void {
    const lifetimeMs = notAfter.getTime() - Date.now();
    this.arm(Math.max(1000, Math.floor((lifetimeMs * 2) / 3)));
  }

  private arm(inMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.renew(), inMs);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      const issued = await issueControlPlaneServerCertificate(this.authority, {
        service: HOST_REGISTRY_SERVICE_IDENTITY,
        names: this.names,
        validForSeconds: SERVER_CERTIFICATE_TTL_SECONDS,
      });
      this.provider.update(issued);
      this.logger.info('renewed the host registry TLS certificate', { notAfter: issued.notAfter.toISOString() });
      this.schedule(issued.notAfter);
    } catch (err) {
      this.logger.error('could not renew the host registry TLS certificate; retrying', { err });
      this.arm(RETRY_RENEWAL_MS);
    }
  }
}
