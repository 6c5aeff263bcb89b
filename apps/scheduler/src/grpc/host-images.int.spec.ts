import { InvalidArgumentError, NotFoundError } from '@corral/domain';
import { createClient, implementBidiStream, implementUnary, openBidiStream, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1, schedulerV1 } from '@corral/proto';
import { AgentPool } from '../agents/agent-pool';
import type { DirectoryHost, HostDirectory } from '../hosts/host-directory';
import { hostImageHandlers } from './host-images';

// The scheduler's image calls on real gRPC ports, against a scripted agent
// that records what reached it: access rules per host and team, and the
// upload and progress passed through message by message. The real agent
// side is tested in apps/node-agent (grpc/image-import.int.spec.ts).

describe('SchedulerService ImportHostImage / ListHostImages', () => {
  let agent: RunningGrpcServer;
  let scheduler: RunningGrpcServer;
  let client: PromiseClient<schedulerV1.SchedulerServiceClient>;
  const pool = new AgentPool({ deadlineMs: 10_000 });
  const received: { header?: agentV1.ImportImageHeader; bytes: number; eof: boolean }[] = [];

  const hosts: DirectoryHost[] = [];
  const directory: HostDirectory = {
    list: async () => hosts,
    get: async (id) => {
      const host = hosts.find((h) => h.id === id);
      if (!host) throw new NotFoundError(`host ${id} not found`);
      return host;
    },
    close: () => undefined,
  };

  beforeAll(async () => {
    agent = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: agentV1.NodeAgentServiceService,
          implementation: {
            ...implementBidiStream(
              agentV1.NodeAgentServiceService,
              {
                async *importImage(requests) {
                  const seen: (typeof received)[number] = { bytes: 0, eof: false };
                  received.push(seen);
                  for await (const m of requests) {
                    if (m.kind?.$case === 'header') seen.header = m.kind.value;
                    if (m.kind?.$case === 'chunk') {
                      seen.bytes += m.kind.value.length;
                      yield { kind: { $case: 'progress', value: { phase: 'receiving', receivedBytes: seen.bytes, consumedBytes: 0, totalBytes: 0 } } };
                    }
                    if (m.kind?.$case === 'eof') seen.eof = true;
                  }
                  if (!seen.eof) throw new InvalidArgumentError('the upload ended before eof', { field: 'eof' });
                  yield { kind: { $case: 'result', value: { imageId: 'a'.repeat(64), ref: seen.header?.ref ?? '', bytes: seen.bytes } } };
                },
              },
              silentLogger,
            ),
            ...implementUnary(
              agentV1.NodeAgentServiceService,
              { listImages: async (req) => ({ images: [{ imageId: 'b'.repeat(64), refs: [`localhost/${req.driver}:1`], sizeBytes: 7, createdAt: undefined }] }) },
              silentLogger,
            ),
          },
        },
      ],
    });
    for (const [id, teamId] of [
      ['platform-1', null],
      ['byoc-a', 'team-a'],
    ] as const) {
      hosts.push({ id, name: id, status: 'online', teamId, drivers: [{ name: 'podman', healthy: true }], agentAddress: agent.address });
    }
    hosts.push({ id: 'gone', name: 'gone', status: 'down', teamId: null, drivers: [], agentAddress: agent.address });
    scheduler = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [{ definition: schedulerV1.SchedulerServiceService, implementation: hostImageHandlers({ hosts: directory, agents: pool }, silentLogger) }],
    });
    client = createClient(schedulerV1.SchedulerServiceClient, scheduler.address, { deadlineMs: 10_000 });
  });

  afterAll(async () => {
    client?.close();
    pool.closeAll();
    await scheduler?.stop();
    await agent?.stop();
  });

  const importInto = async (hostId: string, teamId: string, chunks: string[], { eof = true } = {}) => {
    const call = openBidiStream<schedulerV1.ImportHostImageRequest, schedulerV1.ImportHostImageResponse>((md, o) => client.raw.importHostImage(md, o));
    await call.write({
      kind: { $case: 'header', value: { hostId, teamId, image: { driver: 'podman', ref: 'localhost/app:1', format: 'rootfs-tar', sizeBytes: 0 } } },
    });
    for (const c of chunks) await call.write({ kind: { $case: 'chunk', value: Buffer.from(c) } });
    if (eof) await call.write({ kind: { $case: 'eof', value: true } });
    call.end();
    const messages: schedulerV1.ImportHostImageResponse[] = [];
    for await (const m of call.responses) messages.push(m);
    return messages;
  };

  it('passes an admin upload and its progress through to the host agent', async () => {
    const before = received.length;
    const messages = await importInto('platform-1', '', ['abc', 'defg']);
    expect(messages.map((m) => m.kind?.$case)).toEqual(['progress', 'progress', 'result']);
    expect(messages[1].kind).toEqual({ $case: 'progress', value: expect.objectContaining({ receivedBytes: 7 }) });
    expect(messages[2].kind).toEqual({ $case: 'result', value: { imageId: 'a'.repeat(64), ref: 'localhost/app:1', bytes: 7 } });
    expect(received[before]).toMatchObject({ header: { ref: 'localhost/app:1', format: 'rootfs-tar' }, bytes: 7, eof: true });
  });

  it('lets a team import into its own host only', async () => {
    await expect(importInto('byoc-a', 'team-a', ['x'])).resolves.toHaveLength(2);
    await expect(importInto('byoc-a', 'team-b', ['x'])).rejects.toMatchObject({ name: 'NotFoundError' });
    await expect(importInto('platform-1', 'team-a', ['x'])).rejects.toMatchObject({ name: 'PermissionDeniedError' });
    await expect(importInto('gone', '', ['x'])).rejects.toMatchObject({ name: 'FailedPreconditionError' });
    await expect(importInto('nope', '', ['x'])).rejects.toMatchObject({ name: 'NotFoundError' });
  });

  it('does not complete an upload that ended without eof', async () => {
    const before = received.length;
    await expect(importInto('platform-1', '', ['abc'], { eof: false })).rejects.toBeDefined();
    // Whatever reached the agent, it never saw eof, so it imported nothing.
    expect(received.slice(before).every((r) => !r.eof)).toBe(true);
  });

  it('lists a host image store with the same access rules', async () => {
    const res = await client.listHostImages({ hostId: 'byoc-a', teamId: 'team-a', driver: '' });
    expect(res.images).toEqual([expect.objectContaining({ imageId: 'b'.repeat(64), refs: ['localhost/podman:1'], sizeBytes: 7 })]);
    await expect(client.listHostImages({ hostId: 'byoc-a', teamId: 'team-b', driver: '' })).rejects.toMatchObject({ name: 'NotFoundError' });
    await expect(client.listHostImages({ hostId: '', teamId: '', driver: '' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'hostId' });
  });
});
