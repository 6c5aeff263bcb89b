import { loadHostRegistryConfig } from './config';

describe('host-registry config: the internal CA', () => {
  const base = { DATABASE_URL: 'postgres://x@127.0.0.1/x', NATS_URL: 'nats://127.0.0.1:4222', HOST_KEY_ENCRYPTION_KEY: 'k'.repeat(32) };

  it('takes both CA files or neither, naming the one missing', () => {
    expect(loadHostRegistryConfig(base)).toMatchObject({ caCertFile: undefined, caKeyFile: undefined, hostCertificateTtlSeconds: 86_400 });
    expect(loadHostRegistryConfig({ ...base, CORRAL_CA_CERT_FILE: '/pki/ca.pem', CORRAL_CA_KEY_FILE: '/pki/ca-key.pem' })).toMatchObject({ caCertFile: '/pki/ca.pem', caKeyFile: '/pki/ca-key.pem' });
    expect(() => loadHostRegistryConfig({ ...base, CORRAL_CA_CERT_FILE: '/pki/ca.pem' })).toThrow(/CORRAL_CA_KEY_FILE is required/);
    expect(() => loadHostRegistryConfig({ ...base, CORRAL_CA_KEY_FILE: '/pki/ca-key.pem' })).toThrow(/CORRAL_CA_CERT_FILE is required/);
  });
});
