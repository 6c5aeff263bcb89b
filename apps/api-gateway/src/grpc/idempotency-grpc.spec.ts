import { createClient, Metadata, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { eventually } from '@corral/testing';
import { createCorralOperations } from '../operations/corral-operations';
import { memoryIdempotencyStore } from '../operations/idempotency-store';
import { createServiceOperations, type ServicesPort } from '../operations/service-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { FakeServices } from '../testing/fake-services';
import { corralGrpcService } from './corral-grpc-service';

// Idempotency-Key over the public gRPC API (metadata `idempotency-key`), over
// a real connection to a scripted scheduler: the same key and request replay
// the stored answer without calling the backend again; another request under
// the key is INVALID_ARGUMENT naming it; a key whose first call still runs is
// ABORTED; a failed call frees its key; keys are per API key.

const KEY_A = 'crl_teamaaaa_asecret';
const KEY_B = 'crl_teambbbb_bsecret';
const TOML = `name = "shop"
[[components]]
name = "api"
runtime = "process"
command = ["/bin/sleep", "100"]
`;

describe('public gRPC Idempotency-Key', () => {
  let server: RunningGrpcServer;
  let services: FakeServices;
  let client: PromiseClient<apiV1.CorralServiceClient>;

  const withKey = (idempotencyKey: string | string[], apiKey = KEY_A) => {
    const metadata = new Metadata();
    metadata.set('authorization', `Bearer ${apiKey}`);
    for (const k of [idempotencyKey].flat()) metadata.add('idempotency-key', k);
    return { metadata };
  };

  beforeAll(async () => {
    services = new FakeServices();
    const operations = createCorralOperations({
      scheduler: new FakeScheduler(),
      hostRegistry: new FakeHostRegistry(),
      authenticate: fakeAuthenticator({
        [KEY_A]: { keyId: 'k-a', admin: false, teamId: 'team-a' },
        [KEY_B]: { keyId: 'k-b', admin: false, teamId: 'team-b' },
      }),
    });
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [corralGrpcService(operations, silentLogger, { services: createServiceOperations(services as unknown as ServicesPort), idempotency: memoryIdempotencyStore() })],
    });
    client = createClient(apiV1.CorralServiceClient, server.address, { deadlineMs: 5000 });
  });
  afterAll(async () => {
    client.close();
    await server.stop();
  });

  it('replays the stored answer for the same key and request, without deploying again', async () => {
    const first = await client.deployService({ definitionToml: TOML, wait: false }, withKey('deploy-1'));
    const replay = await client.deployService({ definitionToml: TOML, wait: false }, withKey('deploy-1'));
    expect(replay).toEqual(first);
    expect(services.deploys).toHaveLength(1);
  });

  it('refuses the key with another request: INVALID_ARGUMENT naming the key', async () => {
    await expect(client.deployService({ definitionToml: `${TOML}\n# changed\n`, wait: false }, withKey('deploy-1'))).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      field: 'idempotency-key',
      message: 'idempotency-key was already used with a different request; use a new key',
    });
    // Another rpc with the same request fields is another request too.
    await expect(client.stopService({ name: 'shop' }, withKey('deploy-1'))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'idempotency-key' });
  });

  it('is per API key: another caller with the same key runs anew', async () => {
    const before = services.deploys.length;
    const other = await client.deployService({ definitionToml: TOML, wait: false }, withKey('deploy-1', KEY_B));
    expect(other.service?.teamId).toBe('team-b');
    expect(services.deploys).toHaveLength(before + 1);
  });

  it('answers ABORTED naming the key while the first call still runs', async () => {
    let open!: () => void;
    services.gate = new Promise<void>((resolve) => (open = resolve));
    const before = services.deploys.length;
    const first = client.deployService({ definitionToml: TOML, wait: false }, withKey('slow'));
    // Once the first call reached the backend it holds the key.
    await eventually(async () => (services.deploys.length > before ? true : undefined), { timeoutMs: 5000, what: 'the first call to reach the backend' });
    await expect(client.deployService({ definitionToml: TOML, wait: false }, withKey('slow'))).rejects.toMatchObject({
      code: 'CONFLICT',
      field: 'idempotency-key',
      message: 'a call with this idempotency-key is still being processed; retry later',
    });
    open();
    services.gate = undefined;
    await first;
    expect(await client.deployService({ definitionToml: TOML, wait: false }, withKey('slow'))).toEqual(await first);
  });

  it('frees the key of a call that failed, so a retry runs', async () => {
    services.failNext = true;
    await expect(client.deployService({ definitionToml: TOML, wait: false }, withKey('flaky'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    const before = services.deploys.length;
    await client.deployService({ definitionToml: TOML, wait: false }, withKey('flaky'));
    expect(services.deploys).toHaveLength(before + 1);
  });

  it('covers stop, undeploy and purge', async () => {
    const stopped = await client.stopService({ name: 'shop' }, withKey('stop-1'));
    expect(await client.stopService({ name: 'shop' }, withKey('stop-1'))).toEqual(stopped);
    const removed = await client.undeployService({ name: 'shop' }, withKey('undeploy-1'));
    expect(await client.undeployService({ name: 'shop' }, withKey('undeploy-1'))).toEqual(removed);
    const purged = await client.purgeComponents({ name: 'shop', dryRun: false }, withKey('purge-1'));
    expect(await client.purgeComponents({ name: 'shop', dryRun: false }, withKey('purge-1'))).toEqual(purged);
    expect(services.purges).toHaveLength(1);
  });

  it('refuses a malformed or repeated key, naming it', async () => {
    await expect(client.deployService({ definitionToml: TOML, wait: false }, withKey(['a', 'b']))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'idempotency-key' });
    await expect(client.deployService({ definitionToml: TOML, wait: false }, withKey('has space'))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'idempotency-key' });
  });
});
