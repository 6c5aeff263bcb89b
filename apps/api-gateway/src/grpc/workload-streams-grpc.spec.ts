import { callClientStream, createClient, Metadata, openBidiStream, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1 } from '@corral/proto';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, FakeWorkloadStreams, fakeAuthenticator } from '../testing/fake-backends';
import { corralGrpcService } from './corral-grpc-service';

// Exec, files and snapshots in the public gRPC API, over a real connection
// to in-memory backends.

const TEAM_A_KEY = 'crl_teamaaaa_asecret';
const TEAM_B_KEY = 'crl_teambbbb_bsecret';

describe('public gRPC exec, files and snapshots', () => {
  let server: RunningGrpcServer;
  let scheduler: FakeScheduler;
  let streams: FakeWorkloadStreams;
  let client: PromiseClient<apiV1.CorralServiceClient>;
  let workloadId: string;
  const metadata = (key = TEAM_A_KEY) => {
    const md = new Metadata();
    md.set('authorization', `Bearer ${key}`);
    return md;
  };

  beforeAll(async () => {
    scheduler = new FakeScheduler();
    streams = new FakeWorkloadStreams();
    const operations = createCorralOperations({
      scheduler,
      workloadStreams: streams,
      hostRegistry: new FakeHostRegistry(),
      authenticate: fakeAuthenticator({
        [TEAM_A_KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' },
        [TEAM_B_KEY]: { keyId: 'k-b', admin: false, teamId: 'team-b' },
      }),
    });
    server = await startGrpcServer({ host: '127.0.0.1', port: 0, logger: silentLogger, services: [corralGrpcService(operations, silentLogger, { fileMaxBytes: 10 })] });
    client = createClient(apiV1.CorralServiceClient, server.address, { deadlineMs: 5000, metadata: () => metadata() });
    workloadId = scheduler.add({ teamId: 'team-a', state: 'running' }).id;
  });
  afterAll(async () => {
    client.close();
    await server.stop();
  });

  const exec = async (command: string[], stdin: string[] = [], key = TEAM_A_KEY) => {
    const call = openBidiStream<apiV1.ExecWorkloadRequest, apiV1.ExecWorkloadResponse>((md, o) => client.raw.execWorkload(md, o), { metadata: metadata(key) });
    await call.write({ kind: { $case: 'start', value: apiV1.ExecWorkloadStart.fromPartial({ id: workloadId, command }) } });
    for (const s of stdin) await call.write({ kind: { $case: 'stdin', value: Buffer.from(s) } });
    await call.write({ kind: { $case: 'stdinEof', value: true } });
    const kinds: string[] = [];
    let stdout = '';
    let exitCode: number | undefined;
    for await (const m of call.responses) {
      kinds.push(m.kind?.$case ?? '');
      if (m.kind?.$case === 'stdout') stdout += Buffer.from(m.kind.value).toString();
      if (m.kind?.$case === 'exit') exitCode = m.kind.value.exitCode;
    }
    call.end();
    return { kinds, stdout, exitCode };
  };

  it('execs: started first, output, exit last', async () => {
    await expect(exec(['cat'], ['one ', 'two'])).resolves.toEqual({ kinds: ['started', 'stdout', 'stdout', 'exit'], stdout: 'one two', exitCode: 0 });
  });

  it('answers errors with the fixed public messages', async () => {
    await expect(exec(['echo'], [], TEAM_B_KEY)).rejects.toMatchObject({ code: 'NOT_FOUND', message: 'resource not found' });
    await expect(exec(['not-running'])).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: 'the resource is not in a state that allows this operation' });
    await expect(exec([])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'command' });
  });

  it('writes, reads and lists files; an upload over the limit is RESOURCE_EXHAUSTED', async () => {
    const write = (parts: string[], eof = true) =>
      callClientStream<apiV1.WriteWorkloadFileRequest, apiV1.WriteWorkloadFileResponse>(
        (md, o, cb) => client.raw.writeWorkloadFile(md, o, cb),
        [
          { kind: { $case: 'header', value: { id: workloadId, path: '/a.txt', mode: 0 } } },
          ...parts.map((p) => ({ kind: { $case: 'chunk' as const, value: Buffer.from(p) } })),
          ...(eof ? [{ kind: { $case: 'eof' as const, value: true } }] : []),
        ],
        { metadata: metadata() },
      );
    await expect(write(['abc', 'def'])).resolves.toEqual({ bytes: 6 });
    await expect(write(['0123456789', 'x'])).rejects.toMatchObject({ code: 'RESOURCE_EXHAUSTED' });
    await expect(write(['cut short'], false)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'eof' });
    let text = '';
    for await (const m of client.stream('readWorkloadFile', { id: workloadId, path: '/a.txt' })) text += Buffer.from(m.chunk).toString();
    expect(text).toBe('abcdef');
    const { entries } = await client.listWorkloadDirectory({ id: workloadId, path: '/' });
    expect(entries).toEqual([expect.objectContaining({ name: 'a.txt', kind: 'file', sizeBytes: 6 })]);
  });

  it('streams snapshot progress, then the result', async () => {
    const kinds: string[] = [];
    for await (const m of client.stream('snapshotWorkload', { id: workloadId, leavePaused: false })) kinds.push(m.kind?.$case ?? '');
    expect(kinds).toEqual(['progress', 'progress', 'result']);
  });

  it('lists snapshots and deletes them idempotently; FAILED_PRECONDITION while in use, NOT_FOUND for another team', async () => {
    const createdAt = new Date('2026-02-03T04:05:06Z');
    streams.snapshots.set(workloadId, [{ snapshotId: 'snap-7-aa', sourceWorkloadId: workloadId, createdAt, sizeBytes: 8192, driver: 'qemu' }]);
    expect(await client.listWorkloadSnapshots({ id: workloadId })).toEqual({
      snapshots: [{ snapshotId: 'snap-7-aa', sourceWorkloadId: workloadId, createdAt, sizeBytes: 8192, driver: 'qemu' }],
    });
    streams.snapshotsInUse.add('snap-7-aa');
    await expect(client.deleteWorkloadSnapshot({ id: workloadId, snapshotId: 'snap-7-aa' })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    streams.snapshotsInUse.clear();
    expect(await client.deleteWorkloadSnapshot({ id: workloadId, snapshotId: 'snap-7-aa' })).toEqual({ deleted: true });
    expect(await client.deleteWorkloadSnapshot({ id: workloadId, snapshotId: 'snap-7-aa' })).toEqual({ deleted: false });
    expect(await client.listWorkloadSnapshots({ id: workloadId })).toEqual({ snapshots: [] });
    await expect(client.deleteWorkloadSnapshot({ id: workloadId, snapshotId: 'bad' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(client.listWorkloadSnapshots({ id: workloadId }, { metadata: metadata(TEAM_B_KEY) })).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});
