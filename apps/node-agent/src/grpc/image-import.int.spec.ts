import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExecutor, execErrorFromResult } from '@corral/exec';
import { createClient, openBidiStream, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { buildBusyboxRootfsTar, describeWithPodman } from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';

// ImportImage and ListImages over a real gRPC connection to a real agent
// whose podman driver imports into the real podman store.

const LIMIT = 64 * 1024 * 1024;
const CHUNK = 256 * 1024;
const suffix = `${process.pid}-${Date.now()}`;
const ROOTFS_REF = `localhost/corral-import-test:${suffix}`;
const LOADED_REF = `localhost/corral-load-test:${suffix}`;

const executor = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
const podman = (...args: string[]) =>
  executor.run({ program: 'podman', args, timeoutMs: 120_000, parse: (stdout) => stdout, mapError: (result) => execErrorFromResult(result) });

describeWithPodman('NodeAgentService ImportImage / ListImages (podman)', () => {
  let stateDir: string;
  let agent: RunningNodeAgent;
  let client: PromiseClient<agentV1.NodeAgentServiceClient>;
  const spoolDir = () => join(stateDir, 'image-imports');

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-images-'));
    const config = loadNodeAgentConfig({
      AGENT_GRPC_PORT: '0',
      AGENT_STATE_DIR: stateDir,
      AGENT_ENABLE_PODMAN_DRIVER: 'true',
      AGENT_IMAGE_MAX_BYTES: String(LIMIT),
      NATS_URL: 'nats://127.0.0.1:1',
    });
    agent = await startNodeAgent(config, { hostId: 'host-images-test', bus: { publish: () => undefined }, logger: silentLogger });
    client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 120_000 });
  });

  afterAll(async () => {
    client?.close();
    await agent?.stop();
    for (const ref of [ROOTFS_REF, LOADED_REF]) await podman('rmi', '--force', ref).catch(() => undefined);
    rmSync(stateDir, { recursive: true, force: true });
  });

  const upload = (header: Partial<agentV1.ImportImageHeader>, archive: Buffer, { eof = true } = {}) => {
    const call = openBidiStream<agentV1.ImportImageRequest, agentV1.ImportImageResponse>((md, o) => client.raw.importImage(md, o));
    void (async () => {
      await call.write({ kind: { $case: 'header', value: agentV1.ImportImageHeader.fromPartial({ driver: 'podman', format: 'rootfs-tar', sizeBytes: archive.length, ...header }) } });
      for (let i = 0; i < archive.length; i += CHUNK) await call.write({ kind: { $case: 'chunk', value: archive.subarray(i, i + CHUNK) } });
      if (eof) await call.write({ kind: { $case: 'eof', value: true } });
      call.end();
    })().catch(() => undefined);
    return call;
  };

  const collect = async (call: ReturnType<typeof upload>) => {
    const progress: agentV1.ImportImageProgress[] = [];
    let result: agentV1.ImportImageResult | undefined;
    for await (const m of call.responses) {
      if (m.kind?.$case === 'progress') progress.push(m.kind.value);
      if (m.kind?.$case === 'result') result = m.kind.value;
    }
    return { progress, result };
  };

  it('imports a rootfs tarball with progress of bytes received and bytes podman read, and runs a container from it', async () => {
    const tar = buildBusyboxRootfsTar();
    const { progress, result } = await collect(upload({ ref: ROOTFS_REF }, tar));

    expect(result).toMatchObject({ ref: ROOTFS_REF, bytes: tar.length });
    expect(result?.imageId).toMatch(/^[0-9a-f]{64}$/);
    const received = progress.filter((p) => p.phase === 'receiving');
    expect(received[received.length - 1]).toMatchObject({ receivedBytes: tar.length, totalBytes: tar.length });
    const consumed = progress.filter((p) => p.phase === 'importing').map((p) => p.consumedBytes);
    expect(consumed.length).toBeGreaterThan(0);
    expect([...consumed].sort((a, b) => a - b)).toEqual(consumed);
    expect(progress.some((p) => p.phase === 'storing' && p.consumedBytes === tar.length)).toBe(true);
    // The spool is gone.
    expect(readdirSync(spoolDir())).toEqual([]);

    const listed = await client.listImages({ driver: 'podman' });
    expect(listed.images.find((i) => i.refs.includes(ROOTFS_REF))).toMatchObject({ imageId: result?.imageId });
    const out = await podman('run', '--rm', '--runtime', 'runc', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', ROOTFS_REF, '/bin/echo', 'imported');
    expect(out.trim()).toBe('imported');
  });

  it('loads an OCI archive under the given reference', async () => {
    const archiveDir = mkdtempSync(join(tmpdir(), 'corral-oci-'));
    try {
      const archive = join(archiveDir, 'image.tar');
      await podman('save', '--format', 'oci-archive', '--output', archive, ROOTFS_REF);
      const bytes = readFileSync(archive);
      const { progress, result } = await collect(upload({ ref: LOADED_REF, format: 'oci-archive' }, bytes));
      expect(result).toMatchObject({ ref: LOADED_REF, bytes: bytes.length });
      // podman load reads the file itself: no consumed bytes are claimed.
      expect(progress.filter((p) => p.phase === 'importing').every((p) => p.consumedBytes === 0)).toBe(true);
      await podman('image', 'exists', LOADED_REF);
    } finally {
      rmSync(archiveDir, { recursive: true, force: true });
    }
  });

  it('refuses bad input with the field named, qemu with FailedPrecondition, and leaves no spool behind', async () => {
    const tar = Buffer.from('not really a tarball');
    await expect(collect(upload({ ref: 'Bad Ref' }, tar))).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'ref' });
    await expect(collect(upload({ ref: ROOTFS_REF, format: 'zip' }, tar))).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'format' });
    await expect(collect(upload({ ref: ROOTFS_REF, driver: 'qemu' }, tar))).rejects.toMatchObject({ name: 'FailedPreconditionError', field: 'driver' });
    await expect(collect(upload({ ref: ROOTFS_REF, sizeBytes: LIMIT + 1 }, tar))).rejects.toMatchObject({ name: 'ResourceExhaustedError' });
    await expect(collect(upload({ ref: ROOTFS_REF, sizeBytes: 0 }, Buffer.alloc(LIMIT + 1)))).rejects.toMatchObject({ name: 'ResourceExhaustedError' });
    await expect(collect(upload({ ref: ROOTFS_REF }, tar, { eof: false }))).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'eof' });
    await expect(client.listImages({ driver: 'qemu' })).rejects.toMatchObject({ name: 'FailedPreconditionError' });
    expect(readdirSync(spoolDir())).toEqual([]);
  });
});
