import { NotFoundError } from '@corral/domain';
import { createClient, implementServerStream, iterateServerStream, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1, schedulerV1 } from '@corral/proto';
import { eventually } from '@corral/testing';
import { AgentPool } from '../agents/agent-pool';
import type { DirectoryHost, HostDirectory } from '../hosts/host-directory';
import { hostImageHandlers } from './host-images';

// The scheduler's PullHostImage on real gRPC ports, against a scripted agent
// that records what reached it: the access rules of ImportHostImage, the
// request (credentials included) passed through, progress relayed message
// by message, a typed failure kept, and a caller's cancel reaching the
// agent. The real agent side is apps/node-agent grpc/image-pull.int.spec.ts.

describe('SchedulerService PullHostImage', () => {
  let agent: RunningGrpcServer;
  let scheduler: RunningGrpcServer;
  let client: PromiseClient<schedulerV1.SchedulerServiceClient>;
  const pool = new AgentPool({ deadlineMs: 10_000 });
  const requests: agentV1.PullImageRequest[] = [];
  let cancelledAtAgent = 0;

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
          implementation: implementServerStream(
            agentV1.NodeAgentServiceService,
            {
              async *pullImage(req, ctx) {
                requests.push(req);
                if (req.ref.endsWith(':missing')) throw new NotFoundError('registry has no such image', { field: 'ref' });
                yield { kind: { $case: 'progress', value: { phase: 'resolving', digest: '', blobs: 0, alreadyPresent: false, ref: req.ref } } };
                if (req.ref.endsWith(':hang')) {
                  await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
                  cancelledAtAgent += 1;
                  return;
                }
                yield { kind: { $case: 'progress', value: { phase: 'copying-blob', digest: `sha256:${'1'.repeat(64)}`, blobs: 1, alreadyPresent: false, ref: req.ref } } };
                yield { kind: { $case: 'result', value: { imageId: 'c'.repeat(64), ref: req.ref, digest: `sha256:${'2'.repeat(64)}` } } };
              },
            },
            silentLogger,
          ),
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

  const pull = async (hostId: string, teamId: string, ref: string, credentials?: agentV1.RegistryCredentials, signal?: AbortSignal) => {
    const messages: schedulerV1.PullHostImageResponse[] = [];
    const request = schedulerV1.PullHostImageRequest.fromPartial({ hostId, teamId, image: { driver: '', ref, credentials } });
    for await (const m of iterateServerStream<schedulerV1.PullHostImageResponse>((md, o) => client.raw.pullHostImage(request, md, o), { signal })) messages.push(m);
    return messages;
  };

  it("relays the agent's progress and result, with the request and its credentials passed through", async () => {
    const before = requests.length;
    const messages = await pull('platform-1', '', '127.0.0.1:5000/app:1', { username: 'u', password: 'p' });
    expect(messages.map((m) => m.kind?.$case)).toEqual(['progress', 'progress', 'result']);
    expect(messages[1]?.kind).toEqual({ $case: 'progress', value: expect.objectContaining({ phase: 'copying-blob', blobs: 1 }) });
    expect(messages[2]?.kind).toEqual({ $case: 'result', value: { imageId: 'c'.repeat(64), ref: '127.0.0.1:5000/app:1', digest: `sha256:${'2'.repeat(64)}` } });
    expect(requests[before]).toEqual({ driver: 'podman', ref: '127.0.0.1:5000/app:1', credentials: { username: 'u', password: 'p' } });
  });

  it('applies the host access rules of imports', async () => {
    await expect(pull('byoc-a', 'team-a', 'busybox')).resolves.toHaveLength(3);
    await expect(pull('byoc-a', 'team-b', 'busybox')).rejects.toMatchObject({ name: 'NotFoundError' });
    await expect(pull('platform-1', 'team-a', 'busybox')).rejects.toMatchObject({ name: 'PermissionDeniedError' });
    await expect(pull('gone', '', 'busybox')).rejects.toMatchObject({ name: 'FailedPreconditionError' });
    await expect(pull('nope', '', 'busybox')).rejects.toMatchObject({ name: 'NotFoundError' });
    await expect(pull('', '', 'busybox')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'hostId' });
  });

  it("keeps the agent's typed failure", async () => {
    await expect(pull('platform-1', '', 'busybox:missing')).rejects.toMatchObject({ name: 'NotFoundError', field: 'ref' });
  });

  it("cancels the agent's pull when the caller goes away", async () => {
    const before = cancelledAtAgent;
    const controller = new AbortController();
    const messages: schedulerV1.PullHostImageResponse[] = [];
    const request = schedulerV1.PullHostImageRequest.fromPartial({ hostId: 'platform-1', teamId: '', image: { ref: 'busybox:hang' } });
    for await (const m of iterateServerStream<schedulerV1.PullHostImageResponse>((md, o) => client.raw.pullHostImage(request, md, o), { signal: controller.signal })) {
      messages.push(m);
      controller.abort();
    }
    expect(messages).toHaveLength(1);
    await eventually(() => (cancelledAtAgent > before ? true : undefined), { what: "the agent's call to be cancelled" });
  });
});
