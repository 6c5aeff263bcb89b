import { globMatches, hostInScope, parseTokenScope } from './token-scope';

describe('registration token scope', () => {
  it.each([
    ['web-*', 'web-1', true],
    ['web-*', 'WEB-eu-2', true],
    ['web-*', 'web-', true],
    ['web-*', 'db-1', false],
    ['web-*', 'xweb-1', false],
    ['*.eu.example.com', 'a.eu.example.com', true],
    ['*.eu.example.com', 'a.us.example.com', false],
    ['node-??', 'node-12', true],
    ['node-??', 'node-123', false],
    ['*a*b*c', 'xxaxxbxxc', true],
    ['*a*b*c', 'xxaxxcxxb', false],
    ['exact', 'exact', true],
    ['exact', 'exact2', false],
    ['*', 'anything', true],
  ])('%s matches %s: %s', (pattern, name, expected) => {
    expect(globMatches(pattern, name)).toBe(expected);
  });

  it('needs every scope label with its exact value; extra host labels are fine', () => {
    const scope = parseTokenScope({ namePattern: 'web-*', labels: { zone: 'a', tier: 'edge' } });
    expect(hostInScope(scope, { name: 'web-1', labels: { zone: 'a', tier: 'edge', extra: 'x' } })).toBe(true);
    expect(hostInScope(scope, { name: 'web-1', labels: { zone: 'a' } })).toBe(false);
    expect(hostInScope(scope, { name: 'web-1', labels: { zone: 'b', tier: 'edge' } })).toBe(false);
    expect(hostInScope(scope, { name: 'db-1', labels: { zone: 'a', tier: 'edge' } })).toBe(false);
    expect(hostInScope(parseTokenScope(undefined), { name: 'any', labels: {} })).toBe(true);
    expect(hostInScope(parseTokenScope({ namePattern: '', labels: {} }), { name: 'any', labels: {} })).toBe(true);
  });

  it('refuses malformed scopes naming the field', () => {
    expect(() => parseTokenScope({ namePattern: 'web_[a-z]' })).toThrow(expect.objectContaining({ field: 'scope.namePattern' }));
    expect(() => parseTokenScope({ labels: { '': 'x' } })).toThrow(expect.objectContaining({ field: 'scope.labels' }));
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
    expect(() => parseTokenScope({ labels: many })).toThrow(expect.objectContaining({ field: 'scope.labels' }));
  });
});
