import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isProcessAlive, killProcessGroup, resolveProgram } from '@corral/exec';
import { createClient, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { ensureMicrovmImage, eventually, microvmImageUnavailableReason, qemuProcessesUnder, type MicrovmImage } from '@corral/testing';
import { loadNodeAgentConfig, type NodeAgentConfig } from '../config';
import { hasExec } from '../drivers/driver';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';

// Snapshot list and delete over the agent's gRPC API, with real qemu (tcg)
// and the test microVM on a root disk cloned from a base image: a snapshot
// is listed with the blocks it takes (memory and the disk copy), a restore
// from it gets its own copy of the disk as it was, the list survives an
// agent restart, and deleting is idempotent.

const qemuPath = resolveProgram('qemu-system-x86_64', process.env.PATH);
const skipReason = !qemuPath
  ? 'qemu-system-x86_64 is not installed'
  : !resolveProgram('qemu-img', process.env.PATH)
    ? 'qemu-img is not installed'
    : !resolveProgram('qemu-ga', `${process.env.PATH}:/usr/sbin:/sbin`)
      ? 'qemu-ga is not installed (the test reads the guest disk through it)'
      : microvmImageUnavailableReason();
if (skipReason) console.log(`[skip] snapshot list/delete (real qemu): ${skipReason}`);
const describeWithQemu = skipReason ? describe.skip : describe;

const MARKER = 'before-the-snapshot';

describeWithQemu('snapshot list and delete on the agent (real qemu, tcg)', () => {
  jest.setTimeout(300_000);
  let dir: string;
  let config: NodeAgentConfig;
  let image: MicrovmImage;
  let agent: RunningNodeAgent;
  let client: PromiseClient<agentV1.NodeAgentServiceClient>;
  let baseImage: string;

  const start = async () => {
    agent = await startNodeAgent(config, { logger: silentLogger, hostId: 'host-snapshots', bus: { publish: () => undefined } });
    client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 120_000 });
  };
  const guestExec = (workloadId: string, argv: string[]) => {
    const { driver, handle } = agent.supervisor.live(workloadId, 'exec into');
    if (!hasExec(driver)) throw new Error('qemu must exec');
    return driver.exec(handle, argv, { timeoutMs: 15_000 });
  };
  const spec = (workloadId: string): agentV1.WorkloadSpec => ({
    workloadId,
    name: workloadId,
    driver: 'qemu',
    command: [],
    env: {},
    labels: {},
    image: '',
    resources: { vcpus: 1, memoryMb: 256 },
    routes: [],
    vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: image.kernelArgs, rootDisk: baseImage },
  });

  beforeAll(async () => {
    dir = mkdtempSync('/tmp/csn-');
    image = await ensureMicrovmImage();
    baseImage = join(dir, 'base.raw');
    writeFileSync(baseImage, Buffer.alloc(8 * 1024 * 1024));
    config = loadNodeAgentConfig({
      AGENT_STATE_DIR: join(dir, 'agent'),
      AGENT_GRPC_PORT: '0',
      AGENT_ENABLE_QEMU_DRIVER: 'true',
      AGENT_QEMU_ACCELERATOR: 'tcg',
      AGENT_VOLUME_BACKEND: 'qcow2',
      NATS_URL: 'nats://127.0.0.1:1',
      LOG_LEVEL: 'error',
    });
    await start();
  });

  afterAll(async () => {
    client?.close();
    await agent?.stop();
    for (const pid of qemuProcessesUnder(dir)) if (isProcessAlive(pid)) killProcessGroup(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists a snapshot with its real size, restores from it with a disk of its own, keeps the list across an agent restart, and deletes idempotently', async () => {
    expect((await client.startWorkload({ spec: spec('snap-src') })).workload?.state).toBe('INSTANCE_STATE_RUNNING');
    await eventually(() => guestExec('snap-src', ['true']).catch(() => undefined), { timeoutMs: 120_000, intervalMs: 500, what: 'the guest agent' });
    expect(await guestExec('snap-src', ['sh', '-c', `printf ${MARKER} > /dev/vda && sync`])).toMatchObject({ exitCode: 0 });
    expect(await client.listSnapshots({ workloadId: 'snap-src' })).toEqual({ snapshots: [] });

    let snapshotId = '';
    for await (const m of client.stream('snapshotWorkload', { workloadId: 'snap-src', leavePaused: false })) {
      if (m.kind?.$case === 'result') snapshotId = m.kind.value.snapshotId;
    }
    expect(snapshotId).toMatch(/^snap-/);
    const { snapshots } = await client.listSnapshots({ workloadId: 'snap-src' });
    expect(snapshots).toEqual([{ snapshotId, sourceWorkloadId: 'snap-src', driver: 'qemu', createdAt: expect.any(Date), sizeBytes: expect.any(Number) }]);
    // Guest memory (256 MiB, mostly untouched) compresses to far less; at least the disk copy and the state file take blocks.
    expect(snapshots[0].sizeBytes).toBeGreaterThan(64 * 1024);
    const snapshotDir = join(dir, 'agent', 'snapshots', 'snap-src');
    expect(readdirSync(snapshotDir).filter((n) => n.startsWith(snapshotId)).sort()).toEqual(
      [`${snapshotId}.meta.json`, `${snapshotId}.state`, `${snapshotId}.state.disk0.qcow2`, `${snapshotId}.state.json`].sort(),
    );

    // The source writes on after the snapshot; the restored copy sees the disk as it was, on a disk of its own.
    expect(await guestExec('snap-src', ['sh', '-c', 'printf AFTER-THE-SNAPSHOT > /dev/vda && sync'])).toMatchObject({ exitCode: 0 });
    const restored = await client.restoreWorkload({ spec: spec('snap-copy'), sourceWorkloadId: 'snap-src', snapshotId, paused: false });
    expect(restored.workload?.state).toBe('INSTANCE_STATE_RUNNING');
    // Its page cache came with the memory: dropped, so the read below reaches the disk.
    const readDisk = ['sh', '-c', `echo 3 > /proc/sys/vm/drop_caches && head -c ${MARKER.length} /dev/vda`];
    const copyRead = await eventually(() => guestExec('snap-copy', readDisk).catch(() => undefined), {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: 'the restored guest agent',
    });
    expect(copyRead).toMatchObject({ exitCode: 0, stdout: MARKER });

    // A new agent process reads the same list from disk.
    client.close();
    await agent.stop();
    await start();
    expect((await client.listSnapshots({ workloadId: 'snap-src' })).snapshots.map((s) => s.snapshotId)).toEqual([snapshotId]);

    expect(await client.deleteSnapshot({ workloadId: 'snap-src', snapshotId })).toEqual({ deleted: true });
    expect(await client.listSnapshots({ workloadId: 'snap-src' })).toEqual({ snapshots: [] });
    expect(readdirSync(snapshotDir)).toEqual([]);
    expect(await client.deleteSnapshot({ workloadId: 'snap-src', snapshotId })).toEqual({ deleted: false });
    await expect(client.restoreWorkload({ spec: spec('too-late'), sourceWorkloadId: 'snap-src', snapshotId, paused: false })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(client.deleteSnapshot({ workloadId: 'snap-src', snapshotId: '../../etc' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'snapshotId' });

    // The restored VM runs on, from its own disk.
    expect((await guestExec('snap-copy', readDisk)).stdout).toBe(MARKER);
    expect((await guestExec('snap-src', ['sh', '-c', 'echo 3 > /proc/sys/vm/drop_caches && head -c 18 /dev/vda'])).stdout).toBe('AFTER-THE-SNAPSHOT');
    for (const id of ['snap-copy', 'snap-src']) {
      expect((await client.destroyWorkload({ workloadId: id, force: true, timeoutSeconds: 1 })).workload?.state).toBe('INSTANCE_STATE_RETIRED');
    }
    await eventually(() => (qemuProcessesUnder(dir).length === 0 ? true : undefined), { timeoutMs: 10_000, what: 'qemu gone' });
    expect(existsSync(snapshotDir)).toBe(false);
    expect(readdirSync(join(dir, 'agent', 'volumes', 'qcow2', 'clones'))).toEqual([]);
  });
});
