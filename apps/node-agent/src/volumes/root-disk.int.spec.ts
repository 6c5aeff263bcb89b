import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isProcessAlive, killProcessGroup, resolveProgram } from '@corral/exec';
import { createClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { ensureMicrovmImage, eventually, microvmImageUnavailableReason, qemuProcessesUnder, UNIKERNEL_READY_MARKER, writeUnikernelImage } from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import { hasExec } from '../drivers/driver';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';

// Root disks in production: the agent as node-agent.ts builds it (qemu
// driver on, volume manager selected: qcow2 here, since this kernel has no
// device-mapper), a microVM started over gRPC with vm.rootDisk naming a base
// image. The VM gets its own qcow2 overlay, what the guest writes lands in
// the overlay and never in the base, and a forced teardown leaves no overlay.
// A unikernel takes its disk the same way: a clone of its image from the
// same volume manager, kept through an agent restart, removed at teardown.

const qemuPath = resolveProgram('qemu-system-x86_64', process.env.PATH);
const qemuImgPath = resolveProgram('qemu-img', process.env.PATH);
const agentPath = resolveProgram('qemu-ga', `${process.env.PATH}:/usr/sbin:/sbin`);
const skipReason = !qemuPath
  ? 'qemu-system-x86_64 is not installed'
  : !qemuImgPath
    ? 'qemu-img is not installed'
    : !agentPath
      ? 'qemu-ga is not installed (the guest writes through it)'
      : microvmImageUnavailableReason();
if (skipReason) console.log(`[skip] root disks from base images (real qemu): ${skipReason}`);
const describeWithQemu = skipReason ? describe.skip : describe;

const BASE_MARKER = 'corral-base-image-block-0';
const GUEST_MARKER = 'written-by-the-guest';

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

describeWithQemu('root disks cloned from a base image (node agent, real qemu, qcow2)', () => {
  jest.setTimeout(240_000);
  let dir: string;
  let agent: RunningNodeAgent;
  let client: ReturnType<typeof createClient<agentV1.NodeAgentServiceClient>>;
  let baseImage: string;
  let config: ReturnType<typeof loadNodeAgentConfig>;
  const startAgent = async () => {
    agent = await startNodeAgent(config, { logger: silentLogger, hostId: 'host-root-disks', bus: { publish: () => undefined } });
    client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 120_000 });
  };

  beforeAll(async () => {
    // Short: QMP socket paths must fit in 107 bytes.
    dir = mkdtempSync('/tmp/crd-');
    // A raw 16 MiB base whose first block says what it is.
    baseImage = join(dir, 'base.raw');
    const base = Buffer.alloc(16 * 1024 * 1024);
    base.write(BASE_MARKER, 0);
    writeFileSync(baseImage, base);
    config = loadNodeAgentConfig({
      AGENT_STATE_DIR: join(dir, 'agent'),
      AGENT_GRPC_PORT: '0',
      AGENT_ENABLE_QEMU_DRIVER: 'true',
      AGENT_QEMU_ACCELERATOR: 'tcg',
      // This kernel has no device-mapper; forcing qcow2 keeps the test the same on one that has.
      AGENT_VOLUME_BACKEND: 'qcow2',
      NATS_URL: 'nats://127.0.0.1:1',
      LOG_LEVEL: 'error',
    });
    await startAgent();
  });

  afterAll(async () => {
    client?.close();
    await agent?.stop();
    for (const pid of qemuProcessesUnder(dir)) if (isProcessAlive(pid)) killProcessGroup(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports the volume backend in the qemu fingerprint', async () => {
    const { drivers } = await client.fingerprint({});
    const qemu = drivers.find((d) => d.name === 'qemu');
    expect(qemu?.detail).toMatch(/root disks: qcow2 \(/);
  });

  it('gives the VM its own overlay of the base, keeps the guest writes out of the base, and removes the overlay at teardown', async () => {
    const image = await ensureMicrovmImage();
    const baseHash = sha256(baseImage);
    const { workload } = await client.startWorkload({
      spec: {
        workloadId: 'vm-rd',
        name: 'vm-rd',
        driver: 'qemu',
        command: [],
        env: {},
        labels: {},
        image: '',
        resources: { vcpus: 1, memoryMb: 256 },
        routes: [],
        vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: image.kernelArgs, rootDisk: baseImage },
      },
    });
    expect(workload?.state).toBe('INSTANCE_STATE_RUNNING');

    // The clone: a qcow2 overlay under the volumes dir, recorded on the
    // workload, and the disk qemu was started with (not the base).
    const volumesDir = join(dir, 'agent', 'volumes', 'qcow2');
    const overlay = join(volumesDir, 'clones', 'vm-rd.qcow2');
    expect(existsSync(overlay)).toBe(true);
    const record = JSON.parse(readFileSync(join(dir, 'agent', 'workloads', 'vm-rd.json'), 'utf8')) as { volume?: { path: string; format: string; baseImage: string } };
    expect(record.volume).toEqual({ path: overlay, format: 'qcow2', baseImage });
    const [pid] = qemuProcessesUnder(dir);
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv.some((a) => a.startsWith(`file=${overlay},format=qcow2`))).toBe(true);
    expect(argv.some((a) => a.includes(baseImage))).toBe(false);

    // In the guest: the disk reads through to the base, then takes a write.
    const { driver, handle } = agent.supervisor.live('vm-rd', 'exec into');
    if (!hasExec(driver)) throw new Error('qemu must exec');
    const readHead = (bytes: number) => ['head', '-c', String(bytes), '/dev/vda'];
    const before = await eventually(() => driver.exec(handle, readHead(BASE_MARKER.length), { timeoutMs: 10_000 }).catch(() => undefined), {
      timeoutMs: 120_000,
      intervalMs: 500,
      what: 'the guest agent',
    });
    expect(before).toMatchObject({ exitCode: 0, stdout: BASE_MARKER });
    const allocatedBefore = statSync(overlay).blocks * 512;
    // A MiB of noise, then the marker over its start; sync flushes both to qemu.
    const write = await driver.exec(handle, ['sh', '-c', `head -c 1048576 /dev/urandom > /dev/vda && printf ${GUEST_MARKER} > /dev/vda && sync`], { timeoutMs: 30_000 });
    expect(write).toMatchObject({ exitCode: 0 });
    expect((await driver.exec(handle, readHead(GUEST_MARKER.length), { timeoutMs: 10_000 })).stdout).toBe(GUEST_MARKER);

    // The base is untouched; the overlay holds the writes, counted in real blocks.
    expect(sha256(baseImage)).toBe(baseHash);
    expect(statSync(overlay).blocks * 512).toBeGreaterThan(allocatedBefore);

    // Purge: the VM, its task directory and its overlay all go.
    const destroyed = await client.destroyWorkload({ workloadId: 'vm-rd', force: true, timeoutSeconds: 1 });
    expect(destroyed.workload?.state).toBe('INSTANCE_STATE_RETIRED');
    await eventually(() => (qemuProcessesUnder(dir).length === 0 ? true : undefined), { timeoutMs: 10_000, what: 'qemu gone' });
    expect(existsSync(overlay)).toBe(false);
    expect(readdirSync(join(volumesDir, 'clones'))).toEqual([]);
    const state = JSON.parse(readFileSync(join(volumesDir, 'state.json'), 'utf8')) as { clones: Record<string, unknown> };
    expect(state.clones).toEqual({});
    expect(sha256(baseImage)).toBe(baseHash);
  });

  it('boots a unikernel from its own clone of the image (not a driver overlay), keeps it through an agent restart, and removes it at teardown', async () => {
    const image = writeUnikernelImage(dir);
    const imageHash = sha256(image);
    const { workload } = await client.startWorkload({
      spec: agentV1.WorkloadSpec.fromPartial({
        workloadId: 'uk-rd',
        name: 'uk-rd',
        driver: 'qemu',
        image,
        resources: { vcpus: 1, memoryMb: 64 },
        vm: { mode: 'unikernel' },
      }),
    });
    expect(workload?.state).toBe('INSTANCE_STATE_RUNNING');

    const volumesDir = join(dir, 'agent', 'volumes', 'qcow2');
    const overlay = join(volumesDir, 'clones', 'uk-rd.qcow2');
    expect(existsSync(overlay)).toBe(true);
    const recordPath = join(dir, 'agent', 'workloads', 'uk-rd.json');
    expect((JSON.parse(readFileSync(recordPath, 'utf8')) as { volume?: unknown }).volume).toEqual({ path: overlay, format: 'qcow2', baseImage: image });
    const [pid] = qemuProcessesUnder(dir);
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv.filter((a) => a.startsWith('file='))).toEqual([expect.stringMatching(new RegExp(`^file=${overlay},format=qcow2`))]);
    // No overlay of the driver's own in the task directory.
    expect(existsSync(join(dir, 'agent', 'qemu', 'uk-rd', 'disk0.qcow2'))).toBe(false);
    await eventually(async () => ((await client.readLogs({ workloadId: 'uk-rd', tailBytes: 0 })).data.toString('latin1').includes(UNIKERNEL_READY_MARKER) ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: 'the unikernel marker on the serial console',
    });

    // The agent restarts: the VM is re-adopted on the same clone.
    client.close();
    await agent.stop();
    expect(isProcessAlive(pid)).toBe(true);
    await startAgent();
    expect((await client.inspectWorkload({ workloadId: 'uk-rd' })).workload).toMatchObject({ state: 'INSTANCE_STATE_RUNNING', handle: String(pid) });
    expect(existsSync(overlay)).toBe(true);

    const destroyed = await client.destroyWorkload({ workloadId: 'uk-rd', force: true, timeoutSeconds: 1 });
    expect(destroyed.workload?.state).toBe('INSTANCE_STATE_RETIRED');
    await eventually(() => (qemuProcessesUnder(dir).length === 0 ? true : undefined), { timeoutMs: 10_000, what: 'qemu gone' });
    expect(existsSync(overlay)).toBe(false);
    const state = JSON.parse(readFileSync(join(volumesDir, 'state.json'), 'utf8')) as { clones: Record<string, unknown>; bases: Record<string, unknown> };
    expect(state.clones).toEqual({});
    expect(state.bases).toEqual({});
    expect(sha256(image)).toBe(imageHash);
  });
});
