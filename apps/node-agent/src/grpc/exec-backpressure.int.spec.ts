import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killProcessGroup } from '@corral/exec';
import { createClient, openBidiStream, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { eventually } from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';

// Backpressure of exec output, end to end through a real agent's gRPC
// server and the same client stream the scheduler uses: a caller that reads
// nothing leaves the command blocked on its full stdout with a bounded
// amount written, and reading afterwards still yields every byte.

/** What the command writes: far more than every buffer on the way together. */
const TOTAL_BYTES = 50_000_000;
/**
 * Most the command may have written while nobody reads: pipe, the agent's
 * queue and call buffer, HTTP/2 windows, socket buffers and the client's
 * queue are each at most a few MiB.
 */
const WRITTEN_BOUND_BYTES = 16 * 1024 * 1024;

describe('exec output backpressure (process driver, real gRPC)', () => {
  let stateDir: string;
  let agent: RunningNodeAgent;
  let client: PromiseClient<agentV1.NodeAgentServiceClient>;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-backpressure-'));
    const config = loadNodeAgentConfig({
      AGENT_GRPC_PORT: '0',
      AGENT_STATE_DIR: stateDir,
      AGENT_ENABLE_PROCESS_DRIVER: 'true',
      NATS_URL: 'nats://127.0.0.1:1',
    });
    agent = await startNodeAgent(config, { hostId: 'host-backpressure-test', bus: { publish: () => undefined }, logger: silentLogger });
    client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 15_000 });
    await client.startWorkload(
      agentV1.StartWorkloadRequest.fromPartial({
        spec: agentV1.WorkloadSpec.fromPartial({ workloadId: 'box', name: 'box', driver: 'process', command: ['/bin/sh', '-c', 'exec sleep 600'] }),
      }),
    );
    await eventually(async () => (agent.supervisor.inspect('box').state === 'running' ? true : undefined));
  });

  afterAll(async () => {
    client?.close();
    for (const w of agent?.supervisor.list() ?? []) if (w.handle && !w.exited) killProcessGroup(Number(w.handle), 'SIGKILL');
    await agent?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('blocks a command whose output is not read, then delivers all of it', async () => {
    const marker = join(stateDir, 'writer.pid');
    const call = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => client.raw.exec(md, o));
    await call.write({
      kind: {
        $case: 'start',
        value: agentV1.ExecStart.fromPartial({ workloadId: 'box', command: ['/bin/sh', '-c', `echo $$ > ${marker}; exec head -c ${TOTAL_BYTES} /dev/zero`] }),
      },
    });
    call.end();
    const responses = call.responses[Symbol.asyncIterator]();
    expect((await responses.next()).value?.kind?.$case).toBe('started');
    const pid = await eventually(() => (existsSync(marker) && readFileSync(marker, 'utf8').endsWith('\n') ? Number(readFileSync(marker, 'utf8')) : undefined));

    // Without backpressure the agent drains stdout as fast as head fills it,
    // and head is gone (its /proc entry with it) long before this settles.
    const blocked = await eventually(stalledWriter(pid), { what: 'the command to be blocked writing to its full stdout', timeoutMs: 30_000 });
    expect(blocked.writtenBytes).toBeLessThanOrEqual(WRITTEN_BOUND_BYTES);

    let received = 0;
    let exitCode: number | undefined;
    for (;;) {
      const next = await responses.next();
      if (next.done) break;
      const kind = next.value.kind;
      if (kind?.$case === 'stdout') received += kind.value.length;
      if (kind?.$case === 'exit') exitCode = kind.value.exitCode;
    }
    expect(received).toBe(TOTAL_BYTES);
    expect(exitCode).toBe(0);
  }, 120_000);

  it('holds a caller back whose input the command does not read', async () => {
    const call = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => client.raw.exec(md, o));
    await call.write({ kind: { $case: 'start', value: agentV1.ExecStart.fromPartial({ workloadId: 'box', command: ['/bin/sleep', '600'] }) } });
    const responses = call.responses[Symbol.asyncIterator]();
    expect((await responses.next()).value?.kind?.$case).toBe('started');

    // Each write resolves once the call has taken it; without backpressure all of them would.
    let accepted = 0;
    const writing = (async () => {
      const chunk = Buffer.alloc(64 * 1024, 121);
      for (let sent = 0; sent < TOTAL_BYTES; sent += chunk.length) {
        await call.write({ kind: { $case: 'stdin', value: chunk } });
        accepted += chunk.length;
      }
    })();
    let last = -1;
    let same = 0;
    const held = await eventually(
      () => {
        same = accepted > 0 && accepted === last ? same + 1 : 0;
        last = accepted;
        return same >= 5 ? accepted : undefined;
      },
      { what: 'the input to stop being accepted' },
    );
    expect(held).toBeLessThan(TOTAL_BYTES);
    expect(held).toBeLessThanOrEqual(WRITTEN_BOUND_BYTES);

    // Cancelling lets the waiting writer go and ends the command.
    call.cancel();
    await writing;
    await expect(responses.next()).rejects.toThrow();
  }, 120_000);
});

/** Where the kernel puts a writer to sleep on a full pipe, or on the socket pair Node gives a child as stdout. */
const BLOCKED_WRITING = /pipe_write|sock_alloc_send|unix_stream_sendmsg/;

/**
 * A check for `eventually`: the process sleeps in a write to its stdout, and the bytes
 * it has written have not moved over several looks in a row (a writer that is
 * merely between two reads of a busy reader moves on).
 */
function stalledWriter(pid: number, looks = 5): () => { writtenBytes: number } | undefined {
  let last = -1;
  let same = 0;
  return () => {
    const wchan = readFileSync(`/proc/${pid}/wchan`, 'utf8');
    const io = /wchar:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    const written = io ? Number(io[1]) : -1;
    if (!BLOCKED_WRITING.test(wchan) || written !== last) {
      last = written;
      same = 0;
      return undefined;
    }
    same++;
    return same >= looks ? { writtenBytes: written } : undefined;
  };
}
