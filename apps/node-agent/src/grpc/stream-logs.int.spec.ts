import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killProcessGroup } from '@corral/exec';
import { createClient, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { eventually } from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';

// StreamLogs over a real gRPC connection to a real agent running real
// processes: tail, follow until exit, and cancellation.

describe('NodeAgentService StreamLogs', () => {
  let stateDir: string;
  let agent: RunningNodeAgent;
  let client: PromiseClient<agentV1.NodeAgentServiceClient>;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-logs-'));
    const config = loadNodeAgentConfig({
      AGENT_GRPC_PORT: '0',
      AGENT_STATE_DIR: stateDir,
      AGENT_ENABLE_PROCESS_DRIVER: 'true',
      AGENT_HEARTBEAT_INTERVAL_MS: '1000',
      NATS_URL: 'nats://127.0.0.1:1',
    });
    agent = await startNodeAgent(config, { hostId: 'host-logs-test', bus: { publish: () => undefined }, logger: silentLogger });
    client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 15_000 });
  });

  afterAll(async () => {
    client?.close();
    for (const w of agent?.supervisor.list() ?? []) if (w.handle && !w.exited) killProcessGroup(Number(w.handle), 'SIGKILL');
    await agent?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  const start = (workloadId: string, script: string) =>
    client.startWorkload({
      spec: agentV1.WorkloadSpec.fromPartial({ workloadId, name: workloadId, driver: 'process', command: ['/bin/sh', '-c', script] }),
    });

  it('without follow sends the tail and ends', async () => {
    await start('logs-tail', 'echo one; echo two; exec sleep 30');
    await eventually(async () => (Buffer.from((await client.readLogs({ workloadId: 'logs-tail', tailBytes: 0 })).data).toString() === 'one\ntwo\n' ? true : undefined));
    let text = '';
    for await (const m of client.stream('streamLogs', { workloadId: 'logs-tail', tailBytes: 4, follow: false })) text += Buffer.from(m.data).toString();
    expect(text).toBe('two\n');
    await client.stopWorkload({ workloadId: 'logs-tail', timeoutSeconds: 1, signal: 'SIGKILL' });
  });

  it('follows output written after the call started and ends when the workload exits', async () => {
    await start('logs-follow', 'i=0; while [ $i -lt 15 ]; do echo "line $i"; i=$((i+1)); sleep 0.1; done');
    const callStarted = Date.now();
    const received: { text: string; at: number }[] = [];
    for await (const m of client.stream('streamLogs', { workloadId: 'logs-follow', tailBytes: 0, follow: true })) {
      received.push({ text: Buffer.from(m.data).toString(), at: Date.now() });
    }
    const text = received.map((r) => r.text).join('');
    expect(text).toBe(Array.from({ length: 15 }, (_, i) => `line ${i}\n`).join(''));
    // Output arrived over time, not in one read at the end.
    expect(received.length).toBeGreaterThan(2);
    expect(received[0].at - callStarted).toBeLessThan(1000);
    expect(agent.supervisor.inspect('logs-follow').exited).toBe(true);
  });

  it('stops following when the caller cancels', async () => {
    await start('logs-cancel', 'while true; do echo tick; sleep 0.1; done');
    const controller = new AbortController();
    let ticks = 0;
    for await (const m of client.stream('streamLogs', { workloadId: 'logs-cancel', tailBytes: 0, follow: true }, { signal: controller.signal })) {
      ticks += (Buffer.from(m.data).toString().match(/tick/g) ?? []).length;
      if (ticks >= 3) controller.abort();
    }
    expect(ticks).toBeGreaterThanOrEqual(3);
    expect(agent.supervisor.inspect('logs-cancel').exited).toBe(false);
    await client.stopWorkload({ workloadId: 'logs-cancel', timeoutSeconds: 1, signal: 'SIGKILL' });
  });

  it('answers unknown workloads with a typed error', async () => {
    const err = await (async () => {
      for await (const _ of client.stream('streamLogs', { workloadId: 'missing', tailBytes: 0, follow: true })) void _;
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NOT_FOUND' });
  });
});
