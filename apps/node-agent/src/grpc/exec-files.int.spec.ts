import { mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killProcessGroup } from '@corral/exec';
import { callClientStream, createClient, openBidiStream, type PromiseClient } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { agentV1 } from '@corral/proto';
import { eventually } from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';

// Exec, WriteFile, ReadFile, ListDirectory and SnapshotWorkload over a real
// gRPC connection to a real agent running real processes.

const FILE_LIMIT = 4096;

describe('NodeAgentService exec and files (process driver)', () => {
  let stateDir: string;
  let agent: RunningNodeAgent;
  let client: PromiseClient<agentV1.NodeAgentServiceClient>;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-exec-'));
    const config = loadNodeAgentConfig({
      AGENT_GRPC_PORT: '0',
      AGENT_STATE_DIR: stateDir,
      AGENT_ENABLE_PROCESS_DRIVER: 'true',
      AGENT_FILE_MAX_BYTES: String(FILE_LIMIT),
      NATS_URL: 'nats://127.0.0.1:1',
    });
    agent = await startNodeAgent(config, { hostId: 'host-exec-test', bus: { publish: () => undefined }, logger: silentLogger });
    client = createClient(agentV1.NodeAgentServiceClient, agent.address, { deadlineMs: 15_000 });
    await client.startWorkload({
      spec: agentV1.WorkloadSpec.fromPartial({ workloadId: 'box', name: 'box', driver: 'process', command: ['/bin/sh', '-c', 'exec sleep 600'], env: { MOOD: 'calm' } }),
    });
    await eventually(async () => (agent.supervisor.inspect('box').state === 'running' ? true : undefined));
  });

  afterAll(async () => {
    client?.close();
    for (const w of agent?.supervisor.list() ?? []) if (w.handle && !w.exited) killProcessGroup(Number(w.handle), 'SIGKILL');
    await agent?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  const exec = (start: Partial<agentV1.ExecStart>) => {
    const call = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => client.raw.exec(md, o));
    void call.write({ kind: { $case: 'start', value: agentV1.ExecStart.fromPartial({ workloadId: 'box', ...start }) } });
    return call;
  };

  const collect = async (responses: AsyncIterable<agentV1.ExecResponse>) => {
    const kinds: string[] = [];
    let stdout = '';
    let stderr = '';
    let exitCode: number | undefined;
    for await (const m of responses) {
      kinds.push(m.kind?.$case ?? 'none');
      if (m.kind?.$case === 'stdout') stdout += Buffer.from(m.kind.value).toString();
      if (m.kind?.$case === 'stderr') stderr += Buffer.from(m.kind.value).toString();
      if (m.kind?.$case === 'exit') exitCode = m.kind.value.exitCode;
    }
    return { kinds, stdout, stderr, exitCode };
  };

  const writeWith = (eof: boolean, path: string, ...parts: string[]) =>
    callClientStream<agentV1.WriteFileRequest, agentV1.WriteFileResponse>(
      (md, o, cb) => client.raw.writeFile(md, o, cb),
      [
        { kind: { $case: 'header', value: { workloadId: 'box', path, mode: 0 } } },
        ...parts.map((p) => ({ kind: { $case: 'chunk' as const, value: Buffer.from(p) } })),
        ...(eof ? [{ kind: { $case: 'eof' as const, value: true } }] : []),
      ],
    );

  const write = (path: string, ...parts: string[]) => writeWith(true, path, ...parts);

  const read = async (path: string) => {
    let text = '';
    for await (const m of client.stream('readFile', { workloadId: 'box', path })) text += Buffer.from(m.chunk).toString();
    return text;
  };

  describe('Exec', () => {
    it('streams output, runs in the workload env and cwd, and ends with the exit code', async () => {
      const call = exec({ command: ['/bin/sh', '-c', 'echo "$MOOD $EXTRA"; pwd; echo oops >&2; exit 5'], env: { EXTRA: 'yes' } });
      call.end();
      const result = await collect(call.responses);
      expect(result.kinds[0]).toBe('started');
      expect(result.kinds[result.kinds.length - 1]).toBe('exit');
      expect(result.stdout).toBe(`calm yes\n${findWorkDir(stateDir)}\n`);
      expect(result.stderr).toBe('oops\n');
      expect(result.exitCode).toBe(5);
    });

    it('passes stdin chunks through until stdin_eof', async () => {
      const call = exec({ command: ['/bin/cat'] });
      await call.write({ kind: { $case: 'stdin', value: Buffer.from('hello ') } });
      await call.write({ kind: { $case: 'stdin', value: Buffer.from('world') } });
      await call.write({ kind: { $case: 'stdinEof', value: true } });
      const result = await collect(call.responses);
      expect(result).toMatchObject({ stdout: 'hello world', exitCode: 0 });
      call.end();
    });

    it('kills the command when the caller cancels', async () => {
      const marker = join(stateDir, 'cancelled-exec.pid');
      const call = exec({ command: ['/bin/sh', '-c', `echo $$ > ${marker}; echo ready; exec sleep 300`] });
      const iterator = call.responses[Symbol.asyncIterator]();
      for (;;) {
        const next = await iterator.next();
        if (next.value?.kind?.$case === 'stdout') break;
      }
      call.cancel();
      const pid = Number(readFileSync(marker, 'utf8').trim());
      await eventually(async () => {
        try {
          process.kill(pid, 0);
          return undefined;
        } catch {
          return true;
        }
      });
    });

    it('refuses a TTY for the process driver, a start that is not first, and a missing command', async () => {
      await expect(collect(exec({ command: ['/bin/true'], tty: true }).responses)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
      await expect(collect(exec({ command: [] }).responses)).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'command' });
      const bad = openBidiStream<agentV1.ExecRequest, agentV1.ExecResponse>((md, o) => client.raw.exec(md, o));
      await bad.write({ kind: { $case: 'stdin', value: Buffer.from('x') } });
      await expect(collect(bad.responses)).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'start' });
    });

    it('is a FailedPrecondition for a workload that is not running, NotFound for an unknown one', async () => {
      await client.startWorkload({ spec: agentV1.WorkloadSpec.fromPartial({ workloadId: 'done', name: 'done', driver: 'process', command: ['/bin/true'] }) });
      await eventually(async () => (agent.supervisor.inspect('done').exited ? true : undefined));
      await expect(collect(exec({ workloadId: 'done', command: ['/bin/true'] }).responses)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
      await expect(collect(exec({ workloadId: 'nope', command: ['/bin/true'] }).responses)).rejects.toMatchObject({ name: 'NotFoundError' });
    });
  });

  describe('files', () => {
    it('writes, reads and lists files inside the workload directory', async () => {
      await expect(write('/notes.txt', 'line one\n', 'line two\n')).resolves.toEqual({ bytes: 18 });
      expect(await read('/notes.txt')).toBe('line one\nline two\n');
      const { entries } = await client.listDirectory({ workloadId: 'box', path: '/' });
      expect(entries).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'notes.txt', kind: 'file', sizeBytes: 18, mode: 0o644 })]));
    });

    it('refuses an upload over the limit and keeps the old content, with nothing left behind', async () => {
      await write('/kept.txt', 'original');
      await expect(write('/kept.txt', 'x'.repeat(FILE_LIMIT), 'y')).rejects.toMatchObject({ name: 'ResourceExhaustedError' });
      expect(await read('/kept.txt')).toBe('original');
      const { entries } = await client.listDirectory({ workloadId: 'box', path: '/' });
      expect(entries.filter((e) => e.name.startsWith('.corral-upload-'))).toEqual([]);
    });

    it('writes nothing when the upload ends without eof (a cut-short call)', async () => {
      await write('/cut.txt', 'whole');
      await expect(writeWith(false, '/cut.txt', 'par')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'eof' });
      expect(await read('/cut.txt')).toBe('whole');
    });

    it('refuses `..` and symlinks that lead outside the workload', async () => {
      await expect(read('/../../etc/passwd')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'path' });
      // A link planted in the workload's directory that points at the host's /etc.
      const root = findWorkDir(stateDir);
      symlinkSync('/etc', join(root, 'host-etc'));
      writeFileSync(join(root, 'inside.txt'), 'inside');
      symlinkSync('inside.txt', join(root, 'inner-link'));
      await expect(read('/host-etc/passwd')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'path' });
      await expect(write('/host-etc/corral-test', 'x')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'path' });
      await expect(client.listDirectory({ workloadId: 'box', path: '/host-etc' })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'path' });
      // A link that stays inside is followed.
      expect(await read('/inner-link')).toBe('inside');
    });

    it('answers NotFound for a missing file and InvalidArgument for a directory read', async () => {
      await expect(read('/absent')).rejects.toMatchObject({ name: 'NotFoundError' });
      await expect(read('/')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'path' });
    });
  });

  it('answers FailedPrecondition for a snapshot of a driver that cannot snapshot', async () => {
    const consume = async () => {
      for await (const m of client.stream('snapshotWorkload', { workloadId: 'box', leavePaused: false })) void m;
    };
    await expect(consume()).rejects.toMatchObject({ name: 'FailedPreconditionError' });
  });
});

/** The process driver keeps the task under <stateDir>/…/box/work. */
function findWorkDir(stateDir: string): string {
  const stack = [realpathSync(stateDir)];
  while (stack.length) {
    const dir = stack.pop() as string;
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (!statSync(path).isDirectory()) continue;
      if (name === 'work' && dir.endsWith('/box')) return path;
      stack.push(path);
    }
  }
  throw new Error('work dir not found');
}
