import { createClient, Metadata, openBidiStream, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { createCorralOperations } from '../operations/corral-operations';
import { createImageOperations } from '../operations/image-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { FakeHostImages } from '../testing/fake-host-images';
import { corralGrpcService } from './corral-grpc-service';

// ImportHostImage and ListHostImages in the public gRPC API, over a real
// connection to a scripted scheduler.

const KEY = 'crl_teamaaaa_asecret';

describe('public gRPC host images', () => {
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
      services: [corralGrpcService(operations, silentLogger, { images: createImageOperations(images), imageMaxBytes: 100 })],
    });
    client = createClient(apiV1.CorralServiceClient, server.address, { deadlineMs: 5000, metadata });
  });
  afterAll(async () => {
    client.close();
    await server.stop();
  });

  const importImage = async (header: Partial<apiV1.ImportHostImageHeader>, chunks: string[], { eof = true } = {}) => {
    const call = openBidiStream<apiV1.ImportHostImageRequest, apiV1.ImportHostImageResponse>((md, o) => client.raw.importHostImage(md, o), { metadata: metadata() });
    await call.write({ kind: { $case: 'header', value: apiV1.ImportHostImageHeader.fromPartial({ hostId: 'h-1', ref: 'localhost/app:1', ...header }) } });
    for (const c of chunks) await call.write({ kind: { $case: 'chunk', value: Buffer.from(c) } });
    if (eof) await call.write({ kind: { $case: 'eof', value: true } });
    call.end();
    const kinds: apiV1.ImportHostImageResponse['kind'][] = [];
    for await (const m of call.responses) kinds.push(m.kind);
    return kinds;
  };

  it('streams progress, then the result, with the caller team and the default format', async () => {
    const kinds = await importImage({}, ['ab', 'cd']);
    expect(kinds.map((k) => k?.$case)).toEqual(['progress', 'progress', 'progress', 'result']);
    expect(kinds.at(-1)).toEqual({ $case: 'result', value: { imageId: 'f'.repeat(64), ref: 'localhost/app:1', bytes: 4 } });
    expect(images.completed).toBe(1);
    expect(images.headers.at(-1)).toEqual({ hostId: 'h-1', teamId: 'team-a', image: { driver: 'podman', ref: 'localhost/app:1', format: 'rootfs-tar', sizeBytes: 0 } });
  });

  it('refuses a bad ref naming it, an archive over the limit, and an upload without eof', async () => {
    await expect(importImage({ ref: 'Bad Ref' }, ['x'])).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'ref' });
    await expect(importImage({ sizeBytes: 101 }, ['x'])).rejects.toMatchObject({ name: 'ResourceExhaustedError' });
    await expect(importImage({}, ['x'.repeat(101)])).rejects.toMatchObject({ name: 'ResourceExhaustedError' });
    await expect(importImage({}, ['x'], { eof: false })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'eof' });
    // None of these reached eof upstream: nothing more was imported.
    expect(images.completed).toBe(1);
  });

  it('lists a host images', async () => {
    const res = await client.listHostImages({ hostId: 'h-1' });
    expect(res.images).toEqual([{ imageId: 'e'.repeat(64), refs: ['localhost/app:1'], sizeBytes: 12, createdAt: new Date('2026-01-02T03:04:05Z') }]);
  });
});
