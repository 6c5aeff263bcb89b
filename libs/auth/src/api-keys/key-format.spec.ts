import { apiKeyPrefixOf, generateApiKey, hashApiKey } from './key-format';

describe('API key format', () => {
  it('generates crl_<prefix8>_<secret> keys whose hash is all that identifies them', () => {
    const { key, prefix, secretHash } = generateApiKey();
    expect(key).toMatch(/^crl_[A-Za-z0-9]{8}_[A-Za-z0-9]{43}$/);
    expect(key.startsWith(`${prefix}_`)).toBe(true);
    expect(secretHash).toMatch(/^[0-9a-f]{64}$/);
    expect(secretHash).toBe(hashApiKey(key));
    expect(secretHash).not.toContain(key.slice(prefix.length + 1));
  });

  it('never repeats itself', () => {
    const keys = new Set(Array.from({ length: 1000 }, () => generateApiKey().key));
    expect(keys.size).toBe(1000);
  });

  it('uses the whole base62 alphabet', () => {
    const seen = new Set(Array.from({ length: 200 }, () => generateApiKey().key.slice(13)).join(''));
    expect(seen.size).toBe(62);
  });

  it('reads the prefix of well-formed keys only', () => {
    const { key, prefix } = generateApiKey();
    expect(apiKeyPrefixOf(key)).toBe(prefix);
    for (const bad of ['', 'crl_', `${key}x`, key.replace('crl_', 'xyz_'), `${key.slice(0, -1)}!`, `Bearer ${key}`, key.replace(/_/g, '-')]) {
      expect(apiKeyPrefixOf(bad)).toBeUndefined();
    }
  });
});
