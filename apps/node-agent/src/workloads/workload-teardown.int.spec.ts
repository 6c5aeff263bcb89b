import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Topic } from '@corral/events';
import { createExecutor, execErrorFromResult, isProcessAlive, killProcessGroup, resolveProgram, type Command } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import type { WorkloadStateChanged } from '@corral/proto';
import { describeWithPodman, ensureBusyboxImage, ensureMicrovmImage, eventually, microvmImageUnavailableReason, qemuProcessesUnder } from '@corral/testing';
import { DriverRegistry } from '../drivers/driver-registry';
import { parsePs, WORKLOAD_ID_LABEL } from '../drivers/podman/commands';
import { PodmanDriver } from '../drivers/podman/podman-driver';
import { QemuDriver } from '../drivers/qemu/qemu-driver';
import { PortAllocator } from '../ports';
import { Qcow2VolumeManager } from '../volumes';
import { WorkloadSupervisor, type StateEventPublisher } from './workload-supervisor';

// Teardown through the supervisor with real runtimes: after destroy, podman
// has no container of the workload (`podman ps -a`), and a qemu workload has
// no qemu process, task directory or volume clone left.

class RecordingBus implements StateEventPublisher {
  readonly states = new Map<string, string[]>();
  publish<T>(_topic: Topic<T>, key: string, message: T): void {
    const list = this.states.get(key) ?? [];
    list.push((message as unknown as WorkloadStateChanged).state);
    this.states.set(key, list);
  }
}

describeWithPodman('workload teardown with real podman', () => {
  jest.setTimeout(120_000);
  const run = `td${process.pid.toString(36)}${Date.now().toString(36)}`;
  const podman = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
  const raw = (args: string[]): Command<string> => ({ program: 'podman', args, timeoutMs: 60_000, parse: (out) => out, mapError: (r) => execErrorFromResult(r) });
  /** Containers of this run on the host, running or not. */
  const containers = async () => parsePs(await podman.run(raw(['ps', '--all', '--filter', `label=${WORKLOAD_ID_LABEL}`, '--format', 'json']))).filter((c) => c.workloadId?.startsWith(run));
  let stateDir: string;
  let image: string;
  let driver: PodmanDriver;
  let supervisor: WorkloadSupervisor;
  const bus = new RecordingBus();

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-teardown-podman-'));
    image = await ensureBusyboxImage();
    driver = new PodmanDriver({ logger: silentLogger, exitPollMs: 200, killWaitMs: 10_000 });
    const drivers = new DriverRegistry(silentLogger);
    drivers.register(driver);
    supervisor = new WorkloadSupervisor({ hostId: 'host-td', stateDir, drivers, bus, logger: silentLogger, ports: new PortAllocator({ stateDir, logger: silentLogger, range: { start: 43100, end: 43199 } }) });
    await supervisor.recover();
  });

  afterAll(async () => {
    await supervisor?.close();
    await driver?.close();
    for (const c of await containers()) await podman.run(raw(['rm', '--force', '--time', '0', '--', c.id])).catch(() => undefined);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('a stopped container and a live one (forced) leave nothing in podman ps -a, and their records go', async () => {
    const stoppedId = `${run}-stopped`;
    const liveId = `${run}-live`;
    const base = { name: 'td', driver: 'podman', image, env: {}, labels: {}, resources: { vcpus: 1, memoryMb: 64 } };
    await supervisor.start({ ...base, workloadId: stoppedId, command: ['sleep', '600'] });
    await supervisor.start({ ...base, workloadId: liveId, command: ['sleep', '600'], routes: [{ name: 'http', port: 80, protocol: 'tcp' }] });
    expect((await containers()).map((c) => c.workloadId).sort()).toEqual([liveId, stoppedId].sort());

    await supervisor.stop(stoppedId, { timeoutMs: 1000 });
    // Exited, but still listed by podman ps -a until torn down.
    expect((await containers()).map((c) => c.workloadId)).toContain(stoppedId);
    expect((await supervisor.destroy(stoppedId))?.state).toBe('retired');
    expect((await containers()).map((c) => c.workloadId)).toEqual([liveId]);

    await expect(supervisor.destroy(liveId)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect((await supervisor.destroy(liveId, { force: true, timeoutMs: 1000 }))?.state).toBe('retired');
    expect(await containers()).toEqual([]);
    expect(bus.states.get(liveId)?.slice(-2)).toEqual(['INSTANCE_STATE_TEARING_DOWN', 'INSTANCE_STATE_RETIRED']);
    expect(readdirSync(join(stateDir, 'workloads'))).toEqual([]);
    expect(JSON.parse(readFileSync(join(stateDir, 'ports.json'), 'utf8')).workloads).toEqual({});
    // Destroying again is a no-op.
    expect(await supervisor.destroy(liveId)).toBeUndefined();
  });
});

const qemuPath = resolveProgram('qemu-system-x86_64', process.env.PATH);
const qemuImgPath = resolveProgram('qemu-img', process.env.PATH);
const qemuSkip = !qemuPath ? 'qemu-system-x86_64 is not installed' : !qemuImgPath ? 'qemu-img is not installed' : microvmImageUnavailableReason();
if (qemuSkip) console.log(`[skip] workload teardown with real qemu: ${qemuSkip}`);
const describeWithQemu = qemuSkip ? describe.skip : describe;

describeWithQemu('workload teardown with real qemu (tcg)', () => {
  jest.setTimeout(180_000);
  let stateDir: string;
  let supervisor: WorkloadSupervisor;
  let volumes: Qcow2VolumeManager;

  beforeAll(async () => {
    // Short: the QMP socket path must fit in 107 bytes.
    stateDir = mkdtempSync('/tmp/ctd-');
    const drivers = new DriverRegistry(silentLogger);
    drivers.register(new QemuDriver({ accelerator: 'tcg', stateDir: join(stateDir, 'qemu'), defaultMemoryMb: 256, defaultVcpus: 1, logger: silentLogger }));
    volumes = new Qcow2VolumeManager({ stateDir, executor: createExecutor({ allowedPrograms: ['qemu-img'], logger: silentLogger }), logger: silentLogger });
    await volumes.reconcile();
    supervisor = new WorkloadSupervisor({ hostId: 'host-tq', stateDir, drivers, bus: new RecordingBus(), logger: silentLogger, volumes, ports: new PortAllocator({ stateDir, logger: silentLogger, range: { start: 43200, end: 43299 } }) });
    await supervisor.recover();
  });

  afterAll(async () => {
    await supervisor?.close();
    for (const pid of qemuProcessesUnder(stateDir)) if (isProcessAlive(pid)) killProcessGroup(pid, 'SIGKILL');
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('a forced destroy of a running VM leaves no qemu, no task directory and no volume clone', async () => {
    const image = await ensureMicrovmImage();
    // The workload's copy-on-write clone, as a volume-backed VM would get it.
    const baseImage = join(stateDir, 'base.raw');
    writeFileSync(baseImage, '');
    truncateSync(baseImage, 16 * 1024 * 1024);
    const clone = await volumes.cloneImage(baseImage, 'vm-td');
    expect(existsSync(clone.path)).toBe(true);

    const started = await supervisor.start({
      workloadId: 'vm-td',
      name: 'vm-td',
      driver: 'qemu',
      command: [],
      env: {},
      labels: {},
      resources: { memoryMb: 256, vcpus: 1 },
      vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: image.kernelArgs },
      routes: [{ name: 'http', port: image.guestHttpPort, protocol: 'tcp' }],
    });
    expect(started.state).toBe('running');
    const taskDir = join(stateDir, 'qemu', 'vm-td');
    expect(existsSync(taskDir)).toBe(true);
    expect(qemuProcessesUnder(stateDir)).toHaveLength(1);

    expect((await supervisor.destroy('vm-td', { force: true, timeoutMs: 1000 }))?.state).toBe('retired');
    await eventually(() => (qemuProcessesUnder(stateDir).length === 0 ? true : undefined), { timeoutMs: 10_000, what: 'qemu gone' });
    expect(existsSync(taskDir)).toBe(false);
    expect(existsSync(clone.path)).toBe(false);
    expect((await volumes.list()).clones).toEqual([]);
    expect(readdirSync(join(stateDir, 'workloads'))).toEqual([]);
  });
});
