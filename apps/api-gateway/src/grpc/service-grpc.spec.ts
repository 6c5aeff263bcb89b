import { createClient, Metadata, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { createCorralOperations } from '../operations/corral-operations';
import { createServiceOperations, type ServicesPort } from '../operations/service-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { FakeServices } from '../testing/fake-services';
import { corralGrpcService } from './corral-grpc-service';

// The service rpcs of the public gRPC API over a real connection to a
// scripted scheduler: the caller's team goes down, a bad file comes back
// INVALID_ARGUMENT naming the path inside it.

const KEY = 'crl_teamaaaa_asecret';
const TOML = `name = "shop"
[[components]]
name = "api"
runtime = "process"
command = ["/bin/sleep", "100"]
`;

describe('public gRPC services', () => {
  let server: RunningGrpcServer;
  let services: FakeServices;
  let client: PromiseClient<apiV1.CorralServiceClient>;

  beforeAll(async () => {
    services = new FakeServices();
    const operations = createCorralOperations({
      scheduler: new FakeScheduler(),
      hostRegistry: new FakeHostRegistry(),
      authenticate: fakeAuthenticator({ [KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' } }),
    });
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [corralGrpcService(operations, silentLogger, { services: createServiceOperations(services as unknown as ServicesPort) })],
    });
    const metadata = () => {
      const md = new Metadata();
      md.set('authorization', `Bearer ${KEY}`);
      return md;
    };
    client = createClient(apiV1.CorralServiceClient, server.address, { deadlineMs: 5000, metadata });
  });
  afterAll(async () => {
    client.close();
    await server.stop();
  });

  it('deploys with the caller team and answers the rollout', async () => {
    const res = await client.deployService({ definitionToml: TOML, wait: false });
    expect(res.service).toMatchObject({ name: 'shop', teamId: 'team-a' });
    expect(res.deployment).toMatchObject({ state: 'running', toVersion: 1 });
    expect(services.deploys.map((d) => d.teamId)).toEqual(['team-a']);
  });

  it('answers INVALID_ARGUMENT naming the path inside the file', async () => {
    await expect(client.planService({ definitionToml: TOML.replace('"process"', '"vm"') })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'components[0].runtime' });
  });

  it('gets, lists, stops, undeploys and purges', async () => {
    expect((await client.getService({ name: 'shop' })).service?.name).toBe('shop');
    expect((await client.listServices({})).services).toHaveLength(1);
    expect((await client.stopService({ name: 'shop' })).service?.state).toBe('stopped');
    expect((await client.undeployService({ name: 'shop' })).service?.state).toBe('removed');
    expect(await client.purgeComponents({ name: 'shop', dryRun: true })).toMatchObject({ dryRun: true, purged: [{ name: 'worker' }] });
  });
});
