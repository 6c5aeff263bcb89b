import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, type ExecResult } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import {
  authFileContent,
  checkCredentials,
  mapPullError,
  parsePullReference,
  podmanImageDigest,
  podmanPull,
  pullImage,
  pullProgressParser,
  tlsVerifyFor,
  writeAuthFile,
  type PullProgressEvent,
} from './image-pull';

// The pull as data (reference rules, registry policy, argv, progress parser
// on podman 4.3's real output, error mapping), then the runner against a
// scripted stand-in for podman: progress relayed line by line, the auth
// file present (0600) while podman runs and gone afterwards, the password
// never in argv, abort killing it.

// Captured from `podman pull --tls-verify=false 127.0.0.1:5999/corral/busybox:test` (stderr, no TTY).
const PULL_STDERR = `Trying to pull 127.0.0.1:5999/corral/busybox:test...
Getting image source signatures
Copying blob sha256:bd5fd7fb22ea01e40a9cafd8c70fd11df523286c3293ce88ae94575ba2a6c7a5
Copying config sha256:e3709fbe4a8a06221d6515c929d4399bd6845b2311491c43ac4ae0f5992b3fe8
Writing manifest to image destination
Storing signatures
`;
const IMAGE_ID = 'e3709fbe4a8a06221d6515c929d4399bd6845b2311491c43ac4ae0f5992b3fe8';
const RETRY_LINE =
  'time="2026-12-03T10:21:20Z" level=warning msg="Failed, retrying in 1s ... (1/3). Error: initializing source docker://127.0.0.1:1/a:b: pinging container registry 127.0.0.1:1: Get \\"http://127.0.0.1:1/v2/\\": dial tcp 127.0.0.1:1: connect: connection refused"';

const failed = (stderr: string): ExecResult => ({ program: '/usr/bin/podman', exitCode: 125, signal: null, stdout: '', stderr, durationMs: 1 });

describe('image pull references', () => {
  it('qualifies references like docker does: registry, library/ for docker.io, :latest', () => {
    expect(parsePullReference('busybox')).toMatchObject({ ref: 'docker.io/library/busybox:latest', registry: 'docker.io', repository: 'library/busybox', tag: 'latest' });
    expect(parsePullReference('team/app:1').ref).toBe('docker.io/team/app:1');
    expect(parsePullReference('127.0.0.1:5000/corral/busybox:test')).toMatchObject({ ref: '127.0.0.1:5000/corral/busybox:test', registry: '127.0.0.1:5000', tag: 'test' });
    expect(parsePullReference('localhost/app').ref).toBe('localhost/app:latest');
    expect(parsePullReference('quay.io/a/b/c:v1.2-rc_3').registry).toBe('quay.io');
    const digest = `sha256:${'a'.repeat(64)}`;
    expect(parsePullReference(`ghcr.io/x/y@${digest}`)).toMatchObject({ ref: `ghcr.io/x/y@${digest}`, digest });
    expect(parsePullReference(`ghcr.io/x/y:1@${digest}`)).toMatchObject({ ref: `ghcr.io/x/y:1@${digest}`, tag: '1', digest });
  });

  it('refuses malformed references naming ref', () => {
    for (const ref of ['', 'Busybox', '-q', 'a b', 'a:b:c', 'a//b', 'x@sha256:abc', `a:${'x'.repeat(129)}`, 'a\nb', '--authfile=/etc/passwd']) {
      expect(() => parsePullReference(ref)).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', field: 'ref' }));
    }
  });

  it('applies the allow-list and turns TLS verification off only for insecure registries', () => {
    const policy = { allowed: ['127.0.0.1:5000', 'docker.io'], insecure: ['127.0.0.1:5000'] };
    expect(tlsVerifyFor(parsePullReference('127.0.0.1:5000/a:1'), policy)).toBe(false);
    expect(tlsVerifyFor(parsePullReference('busybox'), policy)).toBe(true);
    expect(() => tlsVerifyFor(parsePullReference('quay.io/a:1'), policy)).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', field: 'ref' }));
    expect(tlsVerifyFor(parsePullReference('quay.io/a:1'), { allowed: [], insecure: [] })).toBe(true);
  });
});

describe('image pull command', () => {
  const reference = parsePullReference('127.0.0.1:5000/corral/busybox:test');

  it('builds argv with the auth file path only, --tls-verify=false only when asked', () => {
    expect(podmanPull(reference, { tlsVerify: true }).args).toEqual(['pull', '127.0.0.1:5000/corral/busybox:test']);
    const insecure = podmanPull(reference, { tlsVerify: false, authFile: '/state/image-pulls/pull-1/auth.json' }, { program: 'podman', globalArgs: ['--cgroup-manager', 'cgroupfs'] });
    expect(insecure.args).toEqual(['--cgroup-manager', 'cgroupfs', 'pull', '--tls-verify=false', '--authfile', '/state/image-pulls/pull-1/auth.json', '127.0.0.1:5000/corral/busybox:test']);
    expect(() => podmanPull(reference, { tlsVerify: true, authFile: 'auth.json' })).toThrow(expect.objectContaining({ field: 'authFile' }));
  });

  it("parses podman's image id and the digest", () => {
    expect(podmanPull(reference, { tlsVerify: true }).parse(`${IMAGE_ID}\n`, PULL_STDERR)).toBe(IMAGE_ID);
    expect(() => podmanPull(reference, { tlsVerify: true }).parse('', PULL_STDERR)).toThrow();
    const digest = podmanImageDigest(IMAGE_ID);
    expect(digest.args).toEqual(['image', 'inspect', '--format', '{{.Digest}}', IMAGE_ID]);
    expect(digest.parse(`sha256:${'7'.repeat(64)}\n`, '')).toBe(`sha256:${'7'.repeat(64)}`);
    expect(digest.parse('\n', '')).toBe('');
  });

  it("reads real podman pull progress line by line, counting blobs, passing none of podman's free text", () => {
    const parse = pullProgressParser();
    const progress = [...PULL_STDERR.split('\n'), RETRY_LINE, 'Copying blob 4f4fb700ef54 skipped: already exists', 'Error: something'].map(parse).filter(Boolean);
    expect(progress).toEqual([
      { phase: 'resolving', blobs: 0 },
      { phase: 'copying-blob', digest: 'sha256:bd5fd7fb22ea01e40a9cafd8c70fd11df523286c3293ce88ae94575ba2a6c7a5', blobs: 1 },
      { phase: 'copying-config', digest: `sha256:${IMAGE_ID}`, blobs: 1 },
      { phase: 'writing-manifest', blobs: 1 },
      { phase: 'storing-signatures', blobs: 1 },
      { phase: 'retrying', blobs: 1 },
      { phase: 'copying-blob', digest: 'sha256:4f4fb700ef54', blobs: 2, alreadyPresent: true },
    ]);
  });

  it('maps what the registry said to typed errors with fixed texts', () => {
    const unknownTag =
      'Trying to pull 127.0.0.1:5999/corral/busybox:nope...\nError: initializing source docker://127.0.0.1:5999/corral/busybox:nope: reading manifest nope in 127.0.0.1:5999/corral/busybox: manifest unknown: manifest unknown\n';
    expect(mapPullError(failed(unknownTag), reference)).toMatchObject({ name: 'NotFoundError', field: 'ref' });
    const refused = 'Error: initializing source docker://127.0.0.1:5998/corral/busybox:auth: reading manifest auth in 127.0.0.1:5998/corral/busybox: unauthorized: authentication required\n';
    expect(mapPullError(failed(refused), reference)).toMatchObject({ name: 'PermissionDeniedError' });
    const https = 'Error: initializing source docker://127.0.0.1:5999/corral/busybox:test: pinging container registry 127.0.0.1:5999: Get "https://127.0.0.1:5999/v2/": http: server gave HTTP response to HTTPS client\n';
    expect(mapPullError(failed(https), reference)).toMatchObject({ name: 'FailedPreconditionError', message: expect.stringContaining('AGENT_IMAGE_INSECURE_REGISTRIES') });
    const down = `${RETRY_LINE}\nError: initializing source docker://127.0.0.1:1/a:b: pinging container registry 127.0.0.1:1: Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused\n`;
    const unreachable = mapPullError(failed(down), reference);
    expect(unreachable).toMatchObject({ name: 'UnavailableError' });
    expect(unreachable.message).not.toMatch(/http:|dial tcp/);
    expect(mapPullError(failed('Error: something else\n'), reference)).toMatchObject({ name: 'ExecError' });
  });
});

describe('image pull credentials', () => {
  it('treats empty credentials as none and refuses malformed ones naming the field', () => {
    expect(checkCredentials(undefined)).toBeUndefined();
    expect(checkCredentials({ username: '', password: '' })).toBeUndefined();
    expect(checkCredentials({ username: 'u', password: 'p w' })).toEqual({ username: 'u', password: 'p w' });
    expect(() => checkCredentials({ username: 'a:b', password: 'p' })).toThrow(expect.objectContaining({ field: 'credentials.username' }));
    expect(() => checkCredentials({ username: 'u', password: '' })).toThrow(expect.objectContaining({ field: 'credentials.password' }));
    expect(() => checkCredentials({ username: '', password: 'p' })).toThrow(expect.objectContaining({ field: 'credentials.username' }));
  });

  it('writes the auth file 0600 in a private directory and removes it', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'corral-authfile-'));
    try {
      const file = await writeAuthFile(join(parent, 'image-pulls'), '127.0.0.1:5000', { username: 'corral', password: 's3cret' });
      expect(statSync(file.path).mode & 0o777).toBe(0o600);
      expect(statSync(join(file.path, '..')).mode & 0o777).toBe(0o700);
      expect(JSON.parse(readFileSync(file.path, 'utf8'))).toEqual({ auths: { '127.0.0.1:5000': { auth: Buffer.from('corral:s3cret').toString('base64') } } });
      await file.remove();
      expect(readdirSync(join(parent, 'image-pulls'))).toEqual([]);
      expect(authFileContent('docker.io', { username: 'a', password: 'b' })).toBe('{"auths":{"docker.io":{"auth":"YTpi"}}}');
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });
});

describe('pullImage with a scripted podman', () => {
  let dir: string;
  let fakePodman: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'corral-fake-podman-'));
    fakePodman = join(dir, 'podman');
    // Records argv and the auth file it was given (content and mode), prints
    // real pull output; "slow" refs hang after the first line.
    writeFileSync(
      fakePodman,
      `#!/bin/sh
here=$(dirname "$0")
if [ "$1" = image ]; then echo "sha256:${'7'.repeat(64)}"; exit 0; fi
printf '%s\\n' "$@" > "$here/args"
prev=""
for a in "$@"; do
  if [ "$prev" = --authfile ]; then cat "$a" > "$here/auth-seen"; stat -c %a "$a" > "$here/auth-mode"; fi
  prev="$a"
done
for last in "$@"; do :; done
case "$last" in
  *slow*) echo "Trying to pull $last..." >&2; exec sleep 60 ;;
  *nope*) echo "Trying to pull $last..." >&2; echo "Error: initializing source docker://$last: reading manifest nope: manifest unknown: manifest unknown" >&2; exit 125 ;;
esac
cat >&2 <<'EOF'
${PULL_STDERR}EOF
echo ${IMAGE_ID}
`,
    );
    chmodSync(fakePodman, 0o755);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const deps = () => ({ executor: createExecutor({ allowedPrograms: [fakePodman], logger: silentLogger }), cli: { program: fakePodman, globalArgs: [] }, logger: silentLogger });
  const settings = () => ({ policy: { allowed: [], insecure: ['127.0.0.1:5000'] }, authDir: join(dir, 'image-pulls'), timeoutMs: 60_000 });

  it('relays progress, answers id, qualified ref and digest, and keeps the password out of argv', async () => {
    const progress: PullProgressEvent[] = [];
    const image = await pullImage(deps(), settings(), { ref: '127.0.0.1:5000/corral/busybox:test', credentials: { username: 'corral', password: 'hunter2-secret' } }, { onProgress: (p) => progress.push(p) });
    expect(image).toEqual({ imageId: IMAGE_ID, ref: '127.0.0.1:5000/corral/busybox:test', digest: `sha256:${'7'.repeat(64)}` });
    expect(progress.map((p) => p.phase)).toEqual(['resolving', 'copying-blob', 'copying-config', 'writing-manifest', 'storing-signatures']);
    expect(progress.every((p) => p.ref === '127.0.0.1:5000/corral/busybox:test')).toBe(true);
    const args = readFileSync(join(dir, 'args'), 'utf8');
    expect(args).not.toContain('hunter2-secret');
    expect(args).toContain('--tls-verify=false');
    expect(readFileSync(join(dir, 'auth-mode'), 'utf8').trim()).toBe('600');
    expect(readFileSync(join(dir, 'auth-seen'), 'utf8')).toContain(Buffer.from('corral:hunter2-secret').toString('base64'));
    // The auth file is gone once the pull is over.
    expect(readdirSync(join(dir, 'image-pulls'))).toEqual([]);
  });

  it('verifies TLS for registries not listed insecure and passes no auth file without credentials', async () => {
    await pullImage(deps(), settings(), { ref: 'registry.example.com/app:1' });
    expect(readFileSync(join(dir, 'args'), 'utf8').split('\n').filter(Boolean)).toEqual(['pull', 'registry.example.com/app:1']);
  });

  it('maps a failed pull and removes the auth file', async () => {
    await expect(pullImage(deps(), settings(), { ref: '127.0.0.1:5000/a:nope', credentials: { username: 'u', password: 'p' } })).rejects.toMatchObject({ name: 'NotFoundError', field: 'ref' });
    expect(readdirSync(join(dir, 'image-pulls'))).toEqual([]);
  });

  it('kills podman when the caller aborts', async () => {
    const controller = new AbortController();
    const pulling = pullImage(deps(), settings(), { ref: '127.0.0.1:5000/a:slow', credentials: { username: 'u', password: 'p' } }, {
      signal: controller.signal,
      onProgress: (p) => {
        if (p.phase === 'resolving') controller.abort(new Error('caller left'));
      },
    });
    await expect(pulling).rejects.toThrow('caller left');
    expect(readdirSync(join(dir, 'image-pulls'))).toEqual([]);
  });

  it('ends a pull past its timeout', async () => {
    await expect(pullImage(deps(), { ...settings(), timeoutMs: 200 }, { ref: '127.0.0.1:5000/a:slow' })).rejects.toMatchObject({ name: 'DeadlineExceededError' });
  });

  it('refuses a registry outside the allow-list before podman runs', async () => {
    rmSync(join(dir, 'args'), { force: true });
    await expect(pullImage(deps(), { ...settings(), policy: { allowed: ['127.0.0.1:5000'], insecure: [] } }, { ref: 'docker.io/library/busybox' })).rejects.toMatchObject({
      name: 'InvalidArgumentError',
      field: 'ref',
    });
    expect(existsSync(join(dir, 'args'))).toBe(false);
  });
});
