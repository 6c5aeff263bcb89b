import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, execErrorFromResult } from '@corral/exec';
import { createClient, iterateServerStream, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import {
  describeWithLocalRegistry,
  ensureBusyboxImage,
  LOCAL_REGISTRY_PASSWORD,
  LOCAL_REGISTRY_USERNAME,
  podmanUnavailableReason,
  startLocalRegistry,
  type LocalRegistry,
} from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';

// PullImage over a real gRPC connection to a real agent whose podman pulls
// from real registries on 127.0.0.1 (docker-registry, one open and one
// behind basic auth), into which the busybox test image was pushed.

const suffix = `${process.pid}-${Date.now()}`;
const executor = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
const podman = (...args: string[]) =>
  executor.run({ program: 'podman', args, timeoutMs: 120_000, parse: (stdout) => stdout, mapError: (result) => execErrorFromResult(result) });

const describeIfReady = podmanUnavailableReason() === undefined ? describeWithLocalRegistry : describe.skip;

describeIfReady('NodeAgentService PullImage (podman, local registry)', () => {
  let stateDir: string;
  let open: LocalRegistry;
  let guarded: LocalRegistry;
  let agent: RunningNodeAgent;
  let client: PromiseClient<agentV1.NodeAgentServiceClient>;
  let openRef: string;
  let guardedRef: string;
  const pulled: string[] = [];

  beforeAll(async () => {
    const local = await ensureBusyboxImage();
    [open, guarded] = await Promise.all([startLocalRegistry(), startLocalRegistry({ auth: true })]);
    openRef = await open.push(local, `corral/pull-test:${suffix}`);
    guardedRef = await guarded.push(local, `corral/private:${suffix}`);
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-pull-'));
    const config = loadNodeAgentConfig({
      AGENT_GRPC_PORT: '0',
      AGENT_STATE_DIR: stateDir,
      AGENT_ENABLE_PODMAN_DRIVER: 'true',
      AGENT_IMAGE_INSECURE_REGISTRIES: `${open.address},${guarded.address}`,
      AGENT_IMAGE_ALLOWED_REGISTRIES: `${open.address},${guarded.address}`,
      NATS_URL: 'nats://127.0.0.1:1',
    });
    agent = await startNodeAgent(config, { hostId: 'host-pull-test', bus: { publish: () => undefined }, logger: silentLogger });
    client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 120_000 });
  }, 180_000);

  afterAll(async () => {
    client?.close();
    await agent?.stop();
    for (const ref of pulled) await podman('rmi', '--force', ref).catch(() => undefined);
    await Promise.all([open?.stop(), guarded?.stop()]);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  const pull = async (request: Partial<agentV1.PullImageRequest>) => {
    const progress: agentV1.PullImageProgress[] = [];
    let result: agentV1.PullImageResult | undefined;
    const stream = iterateServerStream<agentV1.PullImageResponse>((md, o) =>
      client.raw.pullImage(agentV1.PullImageRequest.fromPartial({ driver: 'podman', ...request }), md, o),
    );
    for await (const m of stream) {
      if (m.kind?.$case === 'progress') progress.push(m.kind.value);
      if (m.kind?.$case === 'result') result = m.kind.value;
    }
    return { progress, result };
  };

  it('pulls from a plain-HTTP registry listed insecure, with progress, and a container runs from it', async () => {
    const { progress, result } = await pull({ ref: openRef });
    pulled.push(openRef);
    expect(result).toMatchObject({ ref: openRef });
    expect(result?.imageId).toMatch(/^[0-9a-f]{64}$/);
    expect(result?.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const phases = progress.map((p) => p.phase);
    expect(phases[0]).toBe('resolving');
    expect(phases).toEqual(expect.arrayContaining(['copying-blob', 'copying-config', 'writing-manifest']));
    expect(progress.find((p) => p.phase === 'copying-blob')).toMatchObject({ digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/), blobs: 1, ref: openRef });

    const listed = await client.listImages({ driver: 'podman' });
    expect(listed.images.find((i) => i.refs.includes(openRef))).toMatchObject({ imageId: result?.imageId });
    const out = await podman('run', '--rm', '--runtime', 'runc', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', openRef, '/bin/echo', 'pulled');
    expect(out.trim()).toBe('pulled');
  });

  it('pulls from a registry behind basic auth with credentials, leaving no auth file behind; without them it is PermissionDenied', async () => {
    await expect(pull({ ref: guardedRef })).rejects.toMatchObject({ name: 'PermissionDeniedError' });
    await expect(pull({ ref: guardedRef, credentials: { username: LOCAL_REGISTRY_USERNAME, password: 'wrong' } })).rejects.toMatchObject({ name: 'PermissionDeniedError' });
    const { result } = await pull({ ref: guardedRef, credentials: { username: LOCAL_REGISTRY_USERNAME, password: LOCAL_REGISTRY_PASSWORD } });
    pulled.push(guardedRef);
    expect(result?.ref).toBe(guardedRef);
    expect(readdirSync(join(stateDir, 'image-pulls'))).toEqual([]);
  });

  it('answers an unknown tag with NotFound naming ref', async () => {
    await expect(pull({ ref: `${open.address}/corral/pull-test:no-such-tag` })).rejects.toMatchObject({ name: 'NotFoundError', field: 'ref' });
  });

  it('refuses a malformed ref, a registry off the allow-list and qemu before pulling', async () => {
    await expect(pull({ ref: 'Not A Ref' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'ref' });
    await expect(pull({ ref: 'quay.io/corral/elsewhere:1' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'ref' });
    await expect(pull({ ref: openRef, driver: 'qemu' })).rejects.toMatchObject({ name: 'FailedPreconditionError', field: 'driver' });
  });
});
