import { checkSandboxFilePath, checkSandboxPath } from './sandbox-path';

describe('checkSandboxPath', () => {
  it('normalises absolute paths', () => {
    expect(checkSandboxPath('/')).toBe('/');
    expect(checkSandboxPath('/a//b/./c/')).toBe('/a/b/c');
  });

  it.each([
    ['', 'path is required'],
    ['relative/x', 'absolute'],
    ['/a/../b', '".."'],
    ['/..', '".."'],
    ['/a\0b', 'NUL'],
    [`/${'x'.repeat(5000)}`, 'at most'],
  ])('refuses %j', (path, message) => {
    expect(() => checkSandboxPath(path)).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', field: 'path', message: expect.stringContaining(message) }));
  });

  it('refuses the root as a file', () => {
    expect(() => checkSandboxFilePath('/')).toThrow(expect.objectContaining({ field: 'path' }));
    expect(checkSandboxFilePath('/etc/hosts')).toBe('/etc/hosts');
  });
});
