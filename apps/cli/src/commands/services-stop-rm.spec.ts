import { implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1, schedulerV1 } from '@corral/proto';
import { runCaptured } from '../testing/run-captured';

// `corral service stop|rm <name>` against a scripted gateway: each calls its
// own rpc with the name and prints the service it answers with.

const KEY = 'crl_testkey0_secret';

describe('corral service stop and rm', () => {
  let server: RunningGrpcServer;
  const calls: { rpc: string; name: string }[] = [];
  const answer = (name: string, state: string) => ({ service: schedulerV1.Service.fromPartial({ id: `svc-${name}`, name, state, currentVersion: 2 }) });

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
              async stopService(req) {
                calls.push({ rpc: 'stopService', name: req.name });
                return answer(req.name, 'stopped');
              },
              async undeployService(req) {
                calls.push({ rpc: 'undeployService', name: req.name });
                return answer(req.name, 'removed');
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

  it('stop calls StopService with the name and prints the service', async () => {
    const res = await run(['-o', 'json', 'service', 'stop', 'web']);
    expect(res.code).toBe(0);
    expect(calls.at(-1)).toEqual({ rpc: 'stopService', name: 'web' });
    expect(JSON.parse(res.stdout)).toMatchObject({ id: 'svc-web', name: 'web', state: 'stopped', currentVersion: 2 });
  });

  it('rm calls UndeployService with the name and prints the service', async () => {
    const res = await run(['-o', 'json', 'service', 'rm', 'api']);
    expect(res.code).toBe(0);
    expect(calls.at(-1)).toEqual({ rpc: 'undeployService', name: 'api' });
    expect(JSON.parse(res.stdout)).toMatchObject({ id: 'svc-api', name: 'api', state: 'removed' });
  });

  it('needs the name', async () => {
    const res = await run(['service', 'stop']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/name/);
  });
});
