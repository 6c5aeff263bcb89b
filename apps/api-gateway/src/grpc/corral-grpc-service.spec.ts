import { UnavailableError } from '@corral/domain';
import { createClient, Metadata, startGrpcServer, type PromiseClient, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1, InstanceState } from '@corral/proto';
import { createCorralOperations } from '../operations/corral-operations';
import { FakeHostRegistry, FakeScheduler, fakeAuthenticator } from '../testing/fake-backends';
import { corralGrpcService } from './corral-grpc-service';

const ADMIN_KEY = 'crl_admin000_adminsecret';
const TEAM_A_KEY = 'crl_teamaaaa_asecret';

describe('public gRPC adapter', () => {
  let server: RunningGrpcServer;
  let scheduler: FakeScheduler;
  let hosts: FakeHostRegistry;
  const clients: PromiseClient<apiV1.CorralServiceClient>[] = [];

  beforeAll(async () => {
    scheduler = new FakeScheduler();
    hosts = new FakeHostRegistry();
    const operations = createCorralOperations({
      scheduler,
      hostRegistry: hosts,
      authenticate: fakeAuthenticator({
        [ADMIN_KEY]: { keyId: 'k-admin', admin: true, teamId: null },
        [TEAM_A_KEY]: { keyId: 'k-a', admin: false, teamId: 'team-a' },
      }),
    });
    server = await startGrpcServer({ host: '127.0.0.1', port: 0, logger: silentLogger, services: [corralGrpcService(operations, silentLogger)] });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await server.stop();
  });

  const client = (key?: string) => {
    const c = createClient(apiV1.CorralServiceClient, server.address, {
      deadlineMs: 5000,
      metadata: () => {
        const md = new Metadata();
        if (key) md.set('authorization', `Bearer ${key}`);
        return md;
      },
    });
    clients.push(c);
    return c;
  };

  it('refuses calls without a key, or with an unknown one', async () => {
    await expect(client().whoAmI({})).rejects.toMatchObject({ code: 'UNAUTHENTICATED', message: 'authentication required' });
    await expect(client('crl_nope0000_x').listWorkloads({})).rejects.toMatchObject({ code: 'UNAUTHENTICATED', message: 'authentication required' });
    expect(scheduler.calls).toHaveLength(0);
  });

  const create = (request: Partial<apiV1.CreateWorkloadRequest>) => apiV1.CreateWorkloadRequest.fromPartial(request);

  it('says who the key belongs to', async () => {
    expect(await client(TEAM_A_KEY).whoAmI({})).toEqual({ keyId: 'k-a', admin: false, teamId: 'team-a' });
    expect(await client(ADMIN_KEY).whoAmI({})).toEqual({ keyId: 'k-admin', admin: true, teamId: '' });
  });

  it('runs, lists, reads and stops workloads within the team', async () => {
    const created = await client(TEAM_A_KEY).createWorkload(create({ name: 'web', driver: 'process', command: ['sleep', '1'], env: { A: 'secret-value' } }));
    expect(created.workload).toMatchObject({ name: 'web', teamId: 'team-a', envKeys: ['A'], state: 'INSTANCE_STATE_PENDING' });
    const id = created.workload?.id ?? '';
    const other = scheduler.add({ teamId: 'team-b' });
    scheduler.logs.set(id, Buffer.from('hello\n'));

    expect((await client(TEAM_A_KEY).listWorkloads({})).workloads.map((w) => w.id)).toEqual([id]);
    expect((await client(ADMIN_KEY).listWorkloads({})).workloads).toHaveLength(2);
    expect((await client(TEAM_A_KEY).getWorkload({ id })).workload?.id).toBe(id);
    await expect(client(TEAM_A_KEY).getWorkload({ id: other.id })).rejects.toMatchObject({ code: 'NOT_FOUND', message: 'resource not found' });
    const logs = await client(TEAM_A_KEY).getWorkloadLogs({ id, tailBytes: 0 });
    expect(Buffer.from(logs.data).toString()).toBe('hello\n');
    expect((await client(TEAM_A_KEY).deleteWorkload({ id, purge: false })).workload?.state).toBe('INSTANCE_STATE_STOPPING');
    await expect(client(TEAM_A_KEY).deleteWorkload({ id: other.id, purge: true })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await client(TEAM_A_KEY).deleteWorkload({ id, purge: true })).workload).toMatchObject({ id, state: 'INSTANCE_STATE_RETIRED' });
  });

  it('runs a workload with image, resources, routes; pauses and resumes it', async () => {
    const created = await client(TEAM_A_KEY).createWorkload(
      create({ name: 'pod', driver: 'podman', image: 'localhost/busybox', resources: { vcpus: 1, memoryMb: 64 }, routes: [{ name: 'http', port: 80, protocol: '' }] }),
    );
    expect(scheduler.calls.at(-1)).toMatchObject({
      method: 'createWorkload',
      request: { image: 'localhost/busybox', resources: { vcpus: 1, memoryMb: 64 }, routes: [{ name: 'http', port: 80, protocol: 'tcp' }], vm: undefined },
    });
    expect(created.workload).toMatchObject({ image: 'localhost/busybox', routes: [{ name: 'http', port: 80, protocol: 'tcp' }] });
    const id = created.workload?.id ?? '';
    const stored = scheduler.workloads.get(id);
    if (stored) stored.state = InstanceState.INSTANCE_STATE_RUNNING;
    expect((await client(TEAM_A_KEY).pauseWorkload({ id })).workload?.state).toBe('INSTANCE_STATE_PAUSED');
    expect((await client(TEAM_A_KEY).pauseWorkload({ id })).workload?.state).toBe('INSTANCE_STATE_PAUSED');
    expect((await client(TEAM_A_KEY).resumeWorkload({ id })).workload?.state).toBe('INSTANCE_STATE_RUNNING');
    expect(scheduler.calls.filter((c) => c.method === 'pauseWorkload').at(-1)?.request).toEqual({ id, teamId: 'team-a' });
    const stopped = scheduler.add({ teamId: 'team-a', state: 'stopped' });
    await expect(client(TEAM_A_KEY).pauseWorkload({ id: stopped.id })).rejects.toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: 'the resource is not in a state that allows this operation',
    });
    const theirs = scheduler.add({ teamId: 'team-b' });
    await expect(client(TEAM_A_KEY).resumeWorkload({ id: theirs.id })).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('validates like REST, naming the field', async () => {
    await expect(client(TEAM_A_KEY).createWorkload(create({ name: 'web', driver: 'docker', command: ['x'] }))).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      field: 'driver',
    });
    await expect(client(TEAM_A_KEY).createWorkload(create({ name: 'web', driver: 'process', command: [] }))).rejects.toMatchObject({ field: 'command' });
    await expect(
      client(TEAM_A_KEY).createWorkload(create({ name: 'web', driver: 'process', command: ['x'], routes: [{ name: 'http', port: 80, protocol: '' }, { name: 'http', port: 81, protocol: '' }] })),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'routes[1].name' });
    await expect(client(TEAM_A_KEY).createWorkload(create({ name: 'web', driver: 'podman' }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'image' });
    await expect(client(TEAM_A_KEY).getWorkload({ id: '../x' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'id' });
    await expect(client(TEAM_A_KEY).createRegistrationToken({ ttlSeconds: 1, description: '', scope: undefined })).rejects.toMatchObject({ field: 'ttlSeconds' });
  });

  it('makes team registration tokens for team keys and platform ones for admins', async () => {
    const token = await client(TEAM_A_KEY).createRegistrationToken({ ttlSeconds: 0, description: 'byoc', scope: undefined });
    expect(token.expiresAt).toBeInstanceOf(Date);
    expect(hosts.tokens.at(-1)).toEqual({ ttlSeconds: 3600, teamId: 'team-a', description: 'byoc' });
    await client(ADMIN_KEY).createRegistrationToken({ ttlSeconds: 600, description: '', scope: undefined });
    expect(hosts.tokens.at(-1)).toMatchObject({ teamId: '' });
  });

  it('scopes hosts like REST', async () => {
    const own = hosts.add({ teamId: 'team-a' });
    const other = hosts.add({ teamId: 'team-b' });
    const platform = hosts.add({});
    const visible = (await client(TEAM_A_KEY).listHosts({})).hosts.map((h) => h.id);
    expect(visible).toEqual(expect.arrayContaining([own.id, platform.id]));
    expect(visible).not.toContain(other.id);
    await expect(client(TEAM_A_KEY).getHost({ id: other.id })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await client(ADMIN_KEY).getHost({ id: other.id })).host?.id).toBe(other.id);
  });

  it('streams workload logs within the team, authenticated', async () => {
    const w = scheduler.add({ teamId: 'team-a', state: 'stopped' });
    scheduler.logs.set(w.id, Buffer.from('one\ntwo\n'));
    let text = '';
    for await (const m of client(TEAM_A_KEY).stream('streamWorkloadLogs', { id: w.id, tailBytes: 4, follow: true })) text += Buffer.from(m.data).toString();
    expect(text).toBe('two\n');
    const drain = async (key?: string) => {
      for await (const _ of client(key).stream('streamWorkloadLogs', { id: w.id, tailBytes: 0, follow: false })) void _;
    };
    await expect(drain()).rejects.toMatchObject({ code: 'UNAUTHENTICATED', message: 'authentication required' });
    const other = scheduler.add({ teamId: 'team-b' });
    await expect(
      (async () => {
        for await (const _ of client(TEAM_A_KEY).stream('streamWorkloadLogs', { id: other.id, tailBytes: 0, follow: false })) void _;
      })(),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await drain(ADMIN_KEY);
  });

  it('hides backend text, typed or not', async () => {
    scheduler.failNext(new Error('duplicate key value violates unique constraint "workloads_pkey" at 10.0.0.5'));
    const untyped = await client(TEAM_A_KEY).listWorkloads({}).catch((e: Error) => e);
    expect(untyped).toMatchObject({ code: 'INTERNAL', message: 'internal error' });
    scheduler.failNext(new UnavailableError('connect ECONNREFUSED 10.0.0.5:50051'));
    const typed = await client(TEAM_A_KEY).listWorkloads({}).catch((e: Error) => e);
    expect(typed).toMatchObject({ code: 'UNAVAILABLE', message: 'service unavailable' });
    expect(JSON.stringify(typed) + String(typed)).not.toContain('10.0.0.5');
  });
});
