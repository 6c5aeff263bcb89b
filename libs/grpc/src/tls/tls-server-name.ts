import { credentials, type ChannelCredentials, type VerifyOptions } from '@grpc/grpc-js';

// Corral dials its peers by address (an agent at 100.64.0.7:7443, a registry
// at 127.0.0.1:7001) and checks who answered from the SPIFFE identity in the
// certificate, never from the name dialled. Left alone, grpc-js sends the
// dialled host as the TLS ServerName (SNI), and Node warns (DEP0123) that an
// IP address is not a permitted ServerName; RFC 6066 agrees. Channels with
// identity-checked credentials therefore send a fixed DNS-shaped name
// instead (grpc.ssl_target_name_override). It is under `.invalid` (RFC 2606):
// it names nothing, and nothing checks it (our checkServerIdentity ignores
// the host it is handed). Other TLS credentials (a public certificate
// checked by host name) are left as they are.

/** The ServerName Corral's identity-checked TLS channels send. */
export const IDENTITY_CHECKED_SERVER_NAME = 'corral-peer.invalid';

const identityChecked = new WeakSet<ChannelCredentials>();

/**
 * TLS client credentials that trust `caCertificatePem` and accept the server
 * only when `verify.checkServerIdentity` does (by certificate identity, not
 * by host name). Channels built with them by `createClient` or
 * `checkHealth` (any client given `tlsChannelOptions`) send
 * IDENTITY_CHECKED_SERVER_NAME as their ServerName.
 */
export function identityCheckedSslCredentials(
  caCertificatePem: string,
  privateKeyPem: string | null,
  certificatePem: string | null,
  checkServerIdentity: NonNullable<VerifyOptions['checkServerIdentity']>,
): ChannelCredentials {
  const created = credentials.createSsl(
    Buffer.from(caCertificatePem),
    privateKeyPem === null ? null : Buffer.from(privateKeyPem),
    certificatePem === null ? null : Buffer.from(certificatePem),
    { checkServerIdentity },
  );
  identityChecked.add(created);
  return created;
}

/** Channel options a client made with `channelCredentials` needs: the ServerName override for identity-checked TLS, else none. */
export function tlsChannelOptions(channelCredentials: ChannelCredentials | undefined): Record<string, string> {
  return channelCredentials && identityChecked.has(channelCredentials) ? { 'grpc.ssl_target_name_override': IDENTITY_CHECKED_SERVER_NAME } : {};
}
