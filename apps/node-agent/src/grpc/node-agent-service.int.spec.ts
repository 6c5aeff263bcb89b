import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Topic } from '@corral/events';
import { killProcessGroup } from '@corral/exec';
import { checkHealth, createClient, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { eventually } from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';

// NodeAgentService over a real gRPC connection, served by a real agent (no
// registration: the host id is injected) running real processes.

describe('NodeAgentService over gRPC', () => {
  let stateDir: string;
  let agent: RunningNodeAgent;
  let client: PromiseClient<agentV1.NodeAgentServiceClient>;
  const heartbeats: unknown[] = [];
  const bus = {
    publish<T>(topic: Topic<T>, _key: string, message: T) {
      if (topic.name === 'hostHeartbeat') heartbeats.push(message);
    },
  };

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-grpc-'));
    const config = loadNodeAgentConfig({
      AGENT_GRPC_PORT: '0',
      AGENT_STATE_DIR: stateDir,
      AGENT_ENABLE_PROCESS_DRIVER: 'true',
      AGENT_HEARTBEAT_INTERVAL_MS: '100',
      NATS_URL: 'nats://127.0.0.1:1',
    });
    agent = await startNodeAgent(config, { hostId: 'host-grpc-test', bus, logger: silentLogger });
    client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 15_000 });
  });

  afterAll(async () => {
    client?.close();
    for (const w of agent?.supervisor.list() ?? []) if (w.handle && !w.exited) killProcessGroup(Number(w.handle), 'SIGKILL');
    await agent?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  const spec = (workloadId: string, command: string[], driver = 'process', extra: Partial<agentV1.WorkloadSpec> = {}): agentV1.WorkloadSpec =>
    agentV1.WorkloadSpec.fromPartial({
      workloadId,
      name: workloadId,
      driver,
      command,
      env: { GREETING: 'grpc' },
      labels: { 'corral.workload': workloadId },
      ...extra,
    });

  it('serves health once ready, with the injected host id', async () => {
    expect(agent.hostId).toBe('host-grpc-test');
    expect(await checkHealth(agent.address)).toBe('SERVING');
    expect(await checkHealth(agent.address, 'corral.agent.v1.NodeAgentService')).toBe('SERVING');
  });

  it('starts, inspects, reads logs of and stops a workload', async () => {
    const started = await client.startWorkload({ spec: spec('grpc-hello', ['/bin/sh', '-c', 'echo "hello $GREETING"; exec sleep 30']) });
    expect(started.workload).toMatchObject({
      workloadId: 'grpc-hello',
      driver: 'process',
      state: 'INSTANCE_STATE_RUNNING',
      exited: false,
      seq: 2,
      handle: expect.stringMatching(/^\d+$/),
      startedAt: expect.any(Date),
    });

    const again = await client.startWorkload({ spec: spec('grpc-hello', ['/bin/false']) });
    expect(again.workload).toEqual(started.workload);

    const inspected = await client.inspectWorkload({ workloadId: 'grpc-hello' });
    expect(inspected.workload).toEqual(started.workload);

    const logs = await eventually(async () => {
      const res = await client.readLogs({ workloadId: 'grpc-hello', tailBytes: 0 });
      return res.data.toString().includes('hello grpc') ? res : undefined;
    }, { what: 'logs' });
    expect(logs.truncated).toBe(false);
    const tail = await client.readLogs({ workloadId: 'grpc-hello', tailBytes: 5 });
    expect(tail).toEqual({ data: Buffer.from('grpc\n'), truncated: true });

    const listed = await client.listWorkloads({});
    expect(listed.workloads.map((w) => w.workloadId)).toContain('grpc-hello');

    const stopped = await client.stopWorkload({ workloadId: 'grpc-hello', timeoutSeconds: 5, signal: '' });
    expect(stopped.workload).toMatchObject({ state: 'INSTANCE_STATE_STOPPED', exited: true, seq: 4, finishedAt: expect.any(Date) });
    const stoppedAgain = await client.stopWorkload({ workloadId: 'grpc-hello', timeoutSeconds: 0, signal: 'SIGTERM' });
    expect(stoppedAgain.workload).toEqual(stopped.workload);
  });

  it('reports exit codes', async () => {
    await client.startWorkload({ spec: spec('grpc-three', ['/bin/sh', '-c', 'exit 3']) });
    const failed = await eventually(async () => {
      const { workload } = await client.inspectWorkload({ workloadId: 'grpc-three' });
      return workload?.state === 'INSTANCE_STATE_FAILED' ? workload : undefined;
    }, { what: 'grpc-three to fail' });
    expect(failed).toMatchObject({ exited: true, exitCode: 3 });
  });

  it('answers bad requests with typed errors naming the field', async () => {
    await expect(client.startWorkload({ spec: spec('w-docker', ['/bin/true'], 'docker') })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'spec.driver' });
    await expect(client.startWorkload({ spec: spec('w-qemu', [], 'qemu', { vm: { mode: 'microvm', kernel: '/boot/vmlinuz', initrd: '', kernelArgs: '', rootDisk: '' } }) })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(client.startWorkload({ spec: undefined })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'spec' });
    await expect(client.startWorkload({ spec: spec('w-empty', []) })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'spec.command' });
    await expect(client.inspectWorkload({ workloadId: 'missing' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(client.stopWorkload({ workloadId: 'missing', timeoutSeconds: 0, signal: '' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(client.readLogs({ workloadId: 'missing', tailBytes: 0 })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(client.stopWorkload({ workloadId: 'grpc-three', timeoutSeconds: 0, signal: 'SIGSEGV' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'signal' });
    await expect(client.inspectWorkload({ workloadId: '' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'workloadId' });
  });

  it('allocates host ports for routes, reports them, pauses and resumes, and releases the ports on stop', async () => {
    const started = await client.startWorkload({
      spec: spec('grpc-web', [process.execPath, '-e', "require('http').createServer((q,s)=>s.end('hi '+process.env.PORT_WEB)).listen(process.env.PORT)"], 'process', {
        routes: [{ name: 'web', port: 8080, protocol: '' }],
      }),
    });
    const ports = started.workload?.ports ?? [];
    expect(ports).toEqual([{ name: 'web', guestPort: 8080, hostPort: expect.any(Number), protocol: 'tcp' }]);
    const hostPort = ports[0].hostPort;
    expect(hostPort).toBeGreaterThanOrEqual(10000);
    const get = (timeoutMs = 5000) => fetch(`http://127.0.0.1:${hostPort}/`, { signal: AbortSignal.timeout(timeoutMs) }).then((r) => r.text());
    expect(await eventually(() => get().catch(() => undefined), { what: 'the workload to answer' })).toBe(`hi ${hostPort}`);

    const paused = await client.pauseWorkload({ workloadId: 'grpc-web' });
    expect(paused.workload).toMatchObject({ state: 'INSTANCE_STATE_PAUSED', seq: 3, ports });
    expect((await client.pauseWorkload({ workloadId: 'grpc-web' })).workload).toEqual(paused.workload);
    await expect(get(1000)).rejects.toThrow();
    const resumed = await client.resumeWorkload({ workloadId: 'grpc-web' });
    expect(resumed.workload).toMatchObject({ state: 'INSTANCE_STATE_RUNNING', seq: 4 });
    expect(await get()).toBe(`hi ${hostPort}`);

    const stopped = await client.stopWorkload({ workloadId: 'grpc-web', timeoutSeconds: 5, signal: '' });
    expect(stopped.workload).toMatchObject({ state: 'INSTANCE_STATE_STOPPED', ports: [] });
    expect(JSON.parse(readFileSync(join(stateDir, 'ports.json'), 'utf8')).workloads['grpc-web']).toBeUndefined();
    await expect(client.pauseWorkload({ workloadId: 'grpc-web' })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(client.resumeWorkload({ workloadId: 'missing' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(client.pauseWorkload({ workloadId: '' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'workloadId' });
    await expect(
      client.startWorkload({ spec: spec('grpc-badroute', ['/bin/true'], 'process', { routes: [{ name: 'ok', port: 80, protocol: 'tcp' }, { name: 'bad', port: 0, protocol: 'tcp' }] }) }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'spec.routes[1].port' });
  });

  it('fingerprints the host and its drivers', async () => {
    const res = await client.fingerprint({});
    expect(res.capacity?.cpuMillis).toBeGreaterThanOrEqual(1000);
    expect(res.capacity?.memoryMb).toBeGreaterThan(0);
    expect(res.capacity?.diskMb).toBeGreaterThan(0);
    expect(res.drivers).toEqual([expect.objectContaining({ name: 'process', healthy: true })]);
  });

  it('sends heartbeats with the workloads it runs', async () => {
    const beat = await eventually(() => {
      const last = heartbeats.at(-1) as { seq: number; workloads: Array<{ workloadId: string }> } | undefined;
      return last && last.seq >= 2 && last.workloads.length >= 2 ? last : undefined;
    }, { what: 'heartbeats' });
    expect(beat).toMatchObject({ hostId: 'host-grpc-test', bootId: agent.bootId, agentAddress: agent.address, usage: expect.any(Object) });
    const seqs = (heartbeats as Array<{ seq: number }>).map((h) => h.seq);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
  });
  it('destroys a workload: refused while live, forced stops it, then its process directory, ports and record are gone', async () => {
    const started = await client.startWorkload({
      spec: spec('grpc-rm', ['/bin/sh', '-c', 'echo bye; exec sleep 30'], 'process', { routes: [{ name: 'http', port: 8080, protocol: 'tcp' }] }),
    });
    const pid = Number(started.workload?.handle);
    expect(existsSync(join(stateDir, 'process', 'grpc-rm'))).toBe(true);
    await expect(client.destroyWorkload({ workloadId: 'grpc-rm', force: false, timeoutSeconds: 0 })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect((await client.inspectWorkload({ workloadId: 'grpc-rm' })).workload?.state).toBe('INSTANCE_STATE_RUNNING');

    const destroyed = await client.destroyWorkload({ workloadId: 'grpc-rm', force: true, timeoutSeconds: 5 });
    expect(destroyed.workload).toMatchObject({ workloadId: 'grpc-rm', state: 'INSTANCE_STATE_RETIRED', ports: [] });
    expect(() => process.kill(pid, 0)).toThrow();
    expect(existsSync(join(stateDir, 'process', 'grpc-rm'))).toBe(false);
    expect(existsSync(join(stateDir, 'workloads', 'grpc-rm.json'))).toBe(false);
    expect(JSON.parse(readFileSync(join(stateDir, 'ports.json'), 'utf8')).workloads['grpc-rm']).toBeUndefined();
    await expect(client.inspectWorkload({ workloadId: 'grpc-rm' })).rejects.toMatchObject({ code: 'NOT_FOUND' });

    // Idempotent: gone, or never here, answers OK without a workload.
    expect(await client.destroyWorkload({ workloadId: 'grpc-rm', force: false, timeoutSeconds: 0 })).toEqual({ workload: undefined });
    expect(await client.destroyWorkload({ workloadId: 'never-here', force: false, timeoutSeconds: 0 })).toEqual({ workload: undefined });
    await expect(client.destroyWorkload({ workloadId: '', force: false, timeoutSeconds: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'workloadId' });
  });
});
