// Who a certificate speaks for, as a SPIFFE-style URI in its subject
// alternative names. Hosts and control-plane services are told apart by the
// path, so an agent's certificate can never pass for the scheduler's.

export const TRUST_DOMAIN = 'corral.internal';

export type TlsIdentity = { kind: 'host'; hostId: string } | { kind: 'control-plane'; service: string };

const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function identityUri(identity: TlsIdentity): string {
  const value = identity.kind === 'host' ? identity.hostId : identity.service;
  if (!ID_PATTERN.test(value)) throw new Error(`not a valid ${identity.kind} identity: ${JSON.stringify(value)}`);
  return `spiffe://${TRUST_DOMAIN}/${identity.kind}/${value}`;
}

export function parseIdentityUri(uri: string): TlsIdentity | undefined {
  const prefix = `spiffe://${TRUST_DOMAIN}/`;
  if (!uri.startsWith(prefix)) return undefined;
  const [kind, value, ...rest] = uri.slice(prefix.length).split('/');
  if (rest.length > 0 || value === undefined || !ID_PATTERN.test(value)) return undefined;
  if (kind === 'host') return { kind, hostId: value };
  if (kind === 'control-plane') return { kind, service: value };
  return undefined;
}

/**
 * The identities in a peer certificate's `subjectaltname` as Node's TLS
 * reports it (`URI:spiffe://…, IP Address:127.0.0.1, DNS:…`).
 */
export function identitiesFromSubjectAltName(subjectAltName: string | undefined): TlsIdentity[] {
  if (!subjectAltName) return [];
  return subjectAltName
    .split(/,\s*/)
    .filter((entry) => entry.startsWith('URI:'))
    .map((entry) => parseIdentityUri(entry.slice('URI:'.length)))
    .filter((identity): identity is TlsIdentity => identity !== undefined);
}

export function sameIdentity(a: TlsIdentity, b: TlsIdentity): boolean {
  return identityUri(a) === identityUri(b);
}
