import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connectEventBus, Topics, type EventBus } from '@corral/events';
import { isProcessAlive, killProcessGroup, spawnSupervised, type SupervisedProcess } from '@corral/exec';
import { checkHealth, createClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1, type HostHeartbeat, type WorkloadStateChanged } from '@corral/proto';
import { describeWithNats, eventually, freePort, uniqueSubjectToken } from '@corral/testing';

// The agent as its own OS process (main.ts, as `npm start` runs it) on a real
// NATS: heartbeats and state changes on the wire, and a restart of the agent
// that leaves its workload running and re-adopts it.

const repoRoot = resolve(__dirname, '..', '..', '..');

describeWithNats('node agent process on NATS', (natsUrl) => {
  jest.setTimeout(90_000);
  const hostId = uniqueSubjectToken('host');
  let stateDir: string;
  let bus: EventBus;
  let port: number;
  const heartbeats: HostHeartbeat[] = [];
  const changes: WorkloadStateChanged[] = [];
  let agentProcess: SupervisedProcess | undefined;
  let workloadPid: number | undefined;

  const launchAgent = async () => {
    const proc = await spawnSupervised({
      program: process.execPath,
      args: ['--import', 'tsx', join(repoRoot, 'apps/node-agent/src/main.ts')],
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: stateDir,
        TSX_TSCONFIG_PATH: join(repoRoot, 'tsconfig.base.json'),
        NATS_URL: natsUrl,
        AGENT_GRPC_PORT: String(port),
        AGENT_STATE_DIR: join(stateDir, 'agent'),
        AGENT_ENABLE_PROCESS_DRIVER: 'true',
        // No host registry here (the identity is on disk) and so no CA to verify one with.
        AGENT_ALLOW_INSECURE_CONTROL_PLANE: 'true',
        AGENT_HEARTBEAT_INTERVAL_MS: '200',
        LOG_LEVEL: 'debug',
      },
      cwd: repoRoot,
      logPath: join(stateDir, 'agent.log'),
    });
    agentProcess = proc;
    await eventually(async () => ((await checkHealth(`127.0.0.1:${port}`, '', { deadlineMs: 500 })) === 'SERVING' ? true : undefined), {
      timeoutMs: 60_000,
      what: `agent to serve (log: ${readLog()})`,
    });
    return proc;
  };
  const readLog = () => {
    try {
      return readFileSync(join(stateDir, 'agent.log'), 'utf8').slice(-2000);
    } catch {
      return '';
    }
  };

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-process-'));
    port = await freePort();
    // Registered earlier: the identity is on disk, so no host registry is needed.
    mkdirSync(join(stateDir, 'agent'), { mode: 0o700 });
    writeFileSync(join(stateDir, 'agent', 'identity.json'), JSON.stringify({ hostId, hostToken: 'unused', registeredAt: new Date().toISOString() }), { mode: 0o600 });
    bus = await connectEventBus({ url: natsUrl, name: 'node-agent-test', logger: silentLogger });
    bus.subscribe(Topics.hostHeartbeat, (hb) => void heartbeats.push(hb), { key: hostId });
    bus.subscribe(Topics.workloadState, (c) => {
      if (c.hostId === hostId) changes.push(c);
    });
  });

  afterAll(async () => {
    if (agentProcess) agentProcess.kill('SIGKILL');
    if (workloadPid) killProcessGroup(workloadPid, 'SIGKILL');
    await bus?.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('heartbeats, publishes state changes, and survives its own restart without touching the workload', async () => {
    const first = await launchAgent();
    const firstBeat = await eventually(() => (heartbeats.length >= 3 ? heartbeats[2] : undefined), { what: 'three heartbeats' });
    expect(firstBeat).toMatchObject({ hostId, seq: 3, agentAddress: `127.0.0.1:${port}`, capacity: expect.objectContaining({ cpuMillis: expect.any(Number) }) });
    expect(firstBeat.drivers).toEqual([expect.objectContaining({ name: 'process', healthy: true })]);

    const client = createClient(agentV1.NodeAgentServiceClient, `127.0.0.1:${port}`, { deadlineMs: 15_000 });
    const { workload } = await client.startWorkload({
      spec: agentV1.WorkloadSpec.fromPartial({ workloadId: 'survivor', name: 'survivor', driver: 'process', command: ['/bin/sh', '-c', 'echo up; exec sleep 60'] }),
    });
    workloadPid = Number(workload?.handle);
    await eventually(() => (changes.some((c) => c.workloadId === 'survivor' && c.state === 'INSTANCE_STATE_RUNNING') ? true : undefined), { what: 'running event' });
    await eventually(() => (heartbeats.at(-1)?.workloads.some((w) => w.workloadId === 'survivor' && w.state === 'INSTANCE_STATE_RUNNING') ? true : undefined), {
      what: 'workload in a heartbeat',
    });
    client.close();

    // Graceful stop of the agent: exits 0, the workload keeps running.
    first.kill('SIGTERM');
    expect(await first.wait()).toEqual({ exitCode: 0, signal: null });
    expect(isProcessAlive(workloadPid)).toBe(true);

    const firstBoot = firstBeat.bootId;
    await launchAgent();
    const secondBeat = await eventually(() => heartbeats.find((h) => h.bootId !== firstBoot), { what: 'heartbeat of the new boot' });
    expect(secondBeat.seq).toBe(1);

    const again = createClient(agentV1.NodeAgentServiceClient, `127.0.0.1:${port}`, { deadlineMs: 15_000 });
    const inspected = await again.inspectWorkload({ workloadId: 'survivor' });
    expect(inspected.workload).toMatchObject({ state: 'INSTANCE_STATE_RUNNING', handle: String(workloadPid), seq: 2 });
    expect((await again.readLogs({ workloadId: 'survivor', tailBytes: 0 })).data.toString()).toBe('up\n');

    const stopped = await again.stopWorkload({ workloadId: 'survivor', timeoutSeconds: 5, signal: '' });
    expect(stopped.workload).toMatchObject({ state: 'INSTANCE_STATE_STOPPED', seq: 4, exited: true });
    again.close();
    expect(isProcessAlive(workloadPid)).toBe(false);
    const seen = await eventually(() => {
      const mine = changes.filter((c) => c.workloadId === 'survivor');
      return mine.length >= 4 ? mine : undefined;
    }, { what: 'four state changes' });
    expect(seen.map((c) => [c.seq, c.state])).toEqual([
      [1, 'INSTANCE_STATE_PROVISIONING'],
      [2, 'INSTANCE_STATE_RUNNING'],
      [3, 'INSTANCE_STATE_STOPPING'],
      [4, 'INSTANCE_STATE_STOPPED'],
    ]);
  });
});
