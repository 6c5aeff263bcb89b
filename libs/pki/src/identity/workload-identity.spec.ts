import { identitiesFromSubjectAltName, identityUri, parseIdentityUri, sameIdentity } from './workload-identity';

describe('TLS identities', () => {
  it('round-trips host and control-plane identities', () => {
    expect(identityUri({ kind: 'host', hostId: 'abc-123' })).toBe('spiffe://corral.internal/host/abc-123');
    expect(parseIdentityUri('spiffe://corral.internal/control-plane/scheduler')).toEqual({ kind: 'control-plane', service: 'scheduler' });
    expect(sameIdentity({ kind: 'host', hostId: 'a' }, { kind: 'host', hostId: 'a' })).toBe(true);
    expect(sameIdentity({ kind: 'host', hostId: 'a' }, { kind: 'control-plane', service: 'a' })).toBe(false);
  });

  it('rejects other trust domains, kinds, paths and ids that could smuggle a separator', () => {
    for (const uri of [
      'spiffe://evil.example/host/a',
      'spiffe://corral.internal/admin/a',
      'spiffe://corral.internal/host/a/b',
      'spiffe://corral.internal/host/',
      'https://corral.internal/host/a',
    ]) {
      expect(parseIdentityUri(uri)).toBeUndefined();
    }
    expect(() => identityUri({ kind: 'host', hostId: 'a/../b' })).toThrow('not a valid host identity');
    expect(() => identityUri({ kind: 'host', hostId: '' })).toThrow();
  });

  it('reads the URIs out of a peer certificate\'s subjectaltname and ignores the rest', () => {
    expect(
      identitiesFromSubjectAltName('DNS:agent.local, URI:spiffe://corral.internal/host/h1, IP Address:127.0.0.1, URI:spiffe://other/host/h2'),
    ).toEqual([{ kind: 'host', hostId: 'h1' }]);
    expect(identitiesFromSubjectAltName(undefined)).toEqual([]);
  });
});
