import { parseImages, podmanImport, podmanLoad, podmanTag, validateImageFormat, validateImageRef } from './commands';

// The image commands as data: argv, parsers and input checks.

describe('podman image commands', () => {
  it('accepts image references and refuses anything else, naming the field', () => {
    for (const ref of ['localhost/app:1', 'app', 'registry.example.com:5000/team/app:v1.2-rc_3', 'a/b/c']) expect(validateImageRef(ref)).toBe(ref);
    for (const ref of ['', 'App:1', '-rm', 'a b', 'a:b:c', 'localhost/app@sha256:abc', 'a//b', `a:${'x'.repeat(129)}`, 'a\nb']) {
      expect(() => validateImageRef(ref)).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', field: 'ref' }));
    }
  });

  it('knows the archive formats', () => {
    expect(validateImageFormat('oci-archive')).toBe('oci-archive');
    expect(() => validateImageFormat('zip')).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', field: 'format' }));
  });

  it('loads an archive by path and parses what podman says it loaded', () => {
    const command = podmanLoad('/state/import-1/archive.tar');
    expect(command.args).toEqual(['load', '--input', '/state/import-1/archive.tar']);
    expect(command.parse('Getting image source signatures\nLoaded image: localhost/app:1\n', '')).toEqual(['localhost/app:1']);
    expect(command.parse('Loaded image(s): localhost/a:1,localhost/b:2\n', '')).toEqual(['localhost/a:1', 'localhost/b:2']);
    expect(() => command.parse('nothing\n', '')).toThrow();
    expect(() => podmanLoad('relative.tar')).toThrow(expect.objectContaining({ field: 'archivePath' }));
  });

  it('tags only valid references and imports by URL', () => {
    expect(podmanTag('sha256:abc', 'localhost/app:1').args).toEqual(['tag', 'sha256:abc', 'localhost/app:1']);
    expect(() => podmanTag('abc', 'Bad')).toThrow(expect.objectContaining({ field: 'ref' }));
    expect(podmanImport('http://127.0.0.1:1/x/image.tar', 'localhost/app:1').args).toEqual(['import', '--quiet', 'http://127.0.0.1:1/x/image.tar', 'localhost/app:1']);
  });

  it('parses podman images JSON', () => {
    const images = parseImages(JSON.stringify([{ Id: 'sha256:' + 'c'.repeat(64), Names: ['localhost/app:1'], Size: 42, Created: 1_700_000_000 }, { Id: 'd'.repeat(64) }]));
    expect(images).toEqual([
      { imageId: 'c'.repeat(64), refs: ['localhost/app:1'], sizeBytes: 42, createdAt: new Date(1_700_000_000_000) },
      { imageId: 'd'.repeat(64), refs: [], sizeBytes: 0, createdAt: undefined },
    ]);
    expect(parseImages('')).toEqual([]);
  });
});
