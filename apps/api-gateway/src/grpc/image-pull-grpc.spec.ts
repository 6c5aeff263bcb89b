import { createClient, iterateServerStream, Metadata, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { createCorralOperations } from '../operations/corral-operations';
import { createImageOperations } from '../operations/image-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { FakeHostImages } from '../testing/fake-host-images';
import { corralGrpcService } from './corral-grpc-service';

// PullHostImage in the public gRPC API, over a real connection to a
// scripted scheduler: the same operation as REST (validation, team scope,
// credentials passed on), progress then the result.

const KEY = 'crl_teamaaaa_asecret';

describe('public gRPC PullHostImage', () => {
  let server: RunningGrpcServer;
  let images: FakeHostImages;
  let client: PromiseClient<apiV1.CorralServiceClient>;
  const metadata = () => {
    const md = new Metadata();
    md.set('authorization', `Bearer ${KEY}`);
    return md;
  };

  beforeAll(async () => {
    images = new FakeHostImages();
    const operations = createCorralOperations({
      scheduler: new FakeScheduler(),
      hostRegistry: new FakeHostRegistry(),
      authenticate: fakeAuthenticator({ [KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' } }),
    });
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [corralGrpcService(operations, silentLogger, { images: createImageOperations(images) })],
    });
    client = createClient(apiV1.CorralServiceClient, server.address, { deadlineMs: 5000 });
  });
  afterAll(async () => {
    client.close();
    await server.stop();
  });

  const pull = async (request: Partial<apiV1.PullHostImageRequest>, md = metadata()) => {
    const kinds: apiV1.PullHostImageResponse['kind'][] = [];
    const call = iterateServerStream<apiV1.PullHostImageResponse>((m, o) => client.raw.pullHostImage(apiV1.PullHostImageRequest.fromPartial({ hostId: 'byoc-1', ...request }), m, o), {
      metadata: md,
    });
    for await (const message of call) kinds.push(message.kind);
    return kinds;
  };

  it('streams progress, then the result, with the caller team and the credentials passed on', async () => {
    const kinds = await pull({ ref: '127.0.0.1:5000/app:1', credentials: { username: 'u', password: 'p' } });
    expect(kinds.map((k) => k?.$case)).toEqual(['progress', 'progress', 'result']);
    expect(kinds[1]).toEqual({ $case: 'progress', value: { phase: 'copying-blob', ref: '127.0.0.1:5000/app:1', digest: `sha256:${'1'.repeat(64)}`, blobs: 1, alreadyPresent: false } });
    expect(kinds[2]).toEqual({ $case: 'result', value: { imageId: 'd'.repeat(64), ref: '127.0.0.1:5000/app:1', digest: `sha256:${'2'.repeat(64)}` } });
    expect(images.pulls.at(-1)).toEqual({ hostId: 'byoc-1', teamId: 'team-a', image: { driver: 'podman', ref: '127.0.0.1:5000/app:1', credentials: { username: 'u', password: 'p' } } });
  });

  it('refuses a malformed ref naming it, an unknown host, and a missing key', async () => {
    await expect(pull({ ref: 'Bad Ref' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'ref' });
    await expect(pull({ ref: 'busybox', credentials: { username: 'u', password: '' } })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'credentials.password' });
    await expect(pull({ hostId: 'nope', ref: 'busybox' })).rejects.toMatchObject({ name: 'NotFoundError' });
    await expect(pull({ ref: 'busybox' }, new Metadata())).rejects.toMatchObject({ name: 'UnauthenticatedError' });
  });
});
