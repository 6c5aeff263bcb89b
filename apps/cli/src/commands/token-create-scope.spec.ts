import { implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { runCaptured } from '../testing/run-captured';

// `corral token create` with a TTL and a scope (--name-pattern, --label)
// against a scripted gateway: what is sent, and how a bad label reads.

const KEY = 'crl_testkey0_secret';

describe('corral token create with a scope', () => {
  let server: RunningGrpcServer;
  const received: apiV1.CreateRegistrationTokenRequest[] = [];

  beforeAll(async () => {
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: apiV1.CorralServiceService,
          implementation: implementUnary(
            apiV1.CorralServiceService,
            {
              async createRegistrationToken(req) {
                received.push(req);
                return { id: 't-1', token: 'crt_secret', expiresAt: new Date('2099-01-01T00:00:00Z') };
              },
            },
            silentLogger,
          ),
        },
      ],
    });
  });
  afterAll(() => server.stop());

  const run = (args: string[]) => runCaptured(args, { CORRAL_ADDR: server.address, CORRAL_API_KEY: KEY });

  it('sends the TTL, name pattern and every --label', async () => {
    const res = await run(['--output', 'json', 'token', 'create', '--ttl', '600', '--description', 'rack 7', '--name-pattern', 'rack7-*', '--label', 'zone=b', '--label', 'tier=gpu=1']);
    expect(res).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(res.stdout)).toEqual({ id: 't-1', token: 'crt_secret', expiresAt: '2099-01-01T00:00:00.000Z' });
    expect(received.at(-1)).toEqual({ ttlSeconds: 600, description: 'rack 7', scope: { namePattern: 'rack7-*', labels: { zone: 'b', tier: 'gpu=1' } } });
  });

  it('sends no scope without --name-pattern or --label, and a labels-only scope with --label alone', async () => {
    expect((await run(['token', 'create'])).code).toBe(0);
    expect(received.at(-1)?.scope).toBeUndefined();
    expect((await run(['token', 'create', '--label', 'zone=a'])).code).toBe(0);
    expect(received.at(-1)?.scope).toEqual({ namePattern: '', labels: { zone: 'a' } });
  });

  it('refuses a label without = or given twice as a usage error, before calling anything', async () => {
    const before = received.length;
    const bad = await run(['token', 'create', '--label', 'zone']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--label.*KEY=VALUE/);
    const twice = await run(['token', 'create', '--label', 'zone=a', '--label', 'zone=b']);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toMatch(/zone is given twice/);
    expect(received.length).toBe(before);
  });
});
