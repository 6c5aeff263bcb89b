import { NotFoundError } from '@corral/domain';
import { implementServerStream, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { runCaptured } from '../testing/run-captured';

// `corral images pull` against a scripted gateway: the request sent (the
// password from stdin, never an argument), progress on stderr, the result
// on stdout, refusals and usage errors.

const KEY = 'crl_testkey0_secret';

describe('corral images pull', () => {
  let server: RunningGrpcServer;
  const requests: apiV1.PullHostImageRequest[] = [];

  beforeAll(async () => {
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: apiV1.CorralServiceService,
          implementation: implementServerStream(
            apiV1.CorralServiceService,
            {
              async *pullHostImage(req) {
                requests.push(req);
                if (req.hostId === 'nope') throw new NotFoundError('host not found');
                const ref = req.ref.includes('/') ? req.ref : `docker.io/library/${req.ref}:latest`;
                yield { kind: { $case: 'progress', value: { phase: 'resolving', digest: '', blobs: 0, alreadyPresent: false, ref } } };
                yield { kind: { $case: 'progress', value: { phase: 'copying-blob', digest: `sha256:${'1'.repeat(64)}`, blobs: 1, alreadyPresent: false, ref } } };
                yield { kind: { $case: 'progress', value: { phase: 'writing-manifest', digest: '', blobs: 1, alreadyPresent: false, ref } } };
                yield { kind: { $case: 'result', value: { imageId: 'a'.repeat(64), ref, digest: `sha256:${'2'.repeat(64)}` } } };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
  });
  afterAll(() => server.stop());

  const run = (args: string[], stdin?: string) => runCaptured(args, { CORRAL_ADDR: server.address, CORRAL_API_KEY: KEY }, stdin);

  it('pulls with progress on stderr and the result on stdout', async () => {
    const res = await run(['-o', 'json', 'images', 'pull', '--host', 'h-1', 'busybox']);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ hostId: 'h-1', imageId: 'a'.repeat(64), ref: 'docker.io/library/busybox:latest', digest: `sha256:${'2'.repeat(64)}` });
    expect(res.stderr).toBe('resolving docker.io/library/busybox:latest\ncopying blob sha256:111111111111 [1]\nwriting manifest\n');
    expect(requests.at(-1)).toEqual({ hostId: 'h-1', ref: 'busybox', credentials: undefined });
  });

  it('reads the password from stdin with --password-stdin', async () => {
    const res = await run(['images', 'pull', '--host', 'h-1', '--username', 'corral', '--password-stdin', '127.0.0.1:5000/app:1'], 's3cret-pass\n');
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('127.0.0.1:5000/app:1');
    expect(requests.at(-1)?.credentials).toEqual({ username: 'corral', password: 's3cret-pass' });
  });

  it('refuses --username without --password-stdin (and the reverse) and reports a refusal', async () => {
    const before = requests.length;
    expect((await run(['images', 'pull', '--host', 'h-1', '--username', 'corral', 'busybox'])).code).not.toBe(0);
    expect((await run(['images', 'pull', '--host', 'h-1', '--password-stdin', 'busybox'], 'x\n')).code).not.toBe(0);
    expect(requests.length).toBe(before);
    const refused = await run(['images', 'pull', '--host', 'nope', 'busybox']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^error: /);
  });
});
