import { FailedPreconditionError, InvalidArgumentError, NotFoundError, UnauthenticatedError, UnavailableError } from '@corral/domain';
import { implementServerStream, implementUnary, startGrpcServer, type RunningGrpcServer } from '@corral/grpc';
import { silentLogger } from '@corral/logging';
import { apiV1, HostStatus, InstanceState, schedulerV1 } from '@corral/proto';
import { runCli } from './run-cli';

const KEY = 'crl_testkey0_secret';

class Capture {
  chunks: Buffer[] = [];
  write(chunk: string | Uint8Array) {
    this.chunks.push(Buffer.from(chunk));
    return true;
  }
  get text() {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

const workload = (partial: Partial<schedulerV1.Workload>) =>
  schedulerV1.Workload.fromPartial({
    id: 'w-1',
    name: 'web',
    teamId: 'team-a',
    driver: 'process',
    command: ['sleep', '60'],
    envKeys: ['A'],
    state: InstanceState.INSTANCE_STATE_RUNNING,
    hostId: 'h-1',
    createdAt: new Date('2026-01-01T00:00:00Z'),
    updatedAt: new Date('2026-01-01T00:01:00Z'),
    ...partial,
  });

describe('corral CLI', () => {
  let server: RunningGrpcServer;
  const received: { method: string; request: unknown; authorization: string[] }[] = [];

  beforeAll(async () => {
    const seen = (method: string, request: unknown, ctx: { metadata: { get(k: string): unknown[] } }) => {
      const authorization = ctx.metadata.get('authorization').map(String);
      received.push({ method, request, authorization });
      if (authorization[0] !== `Bearer ${KEY}`) throw new UnauthenticatedError('authentication required');
    };
    server = await startGrpcServer({
      host: '127.0.0.1',
      port: 0,
      logger: silentLogger,
      services: [
        {
          definition: apiV1.CorralServiceService,
          implementation: {
            ...implementServerStream(
              apiV1.CorralServiceService,
              {
                async *streamWorkloadLogs(req, ctx) {
                  seen('streamWorkloadLogs', req, ctx);
                  yield { data: Buffer.from('first\n') };
                  await new Promise((r) => setTimeout(r, 50));
                  yield { data: Buffer.from('second\n') };
                },
              },
              silentLogger,
            ),
            ...implementUnary(
            apiV1.CorralServiceService,
            {
              async whoAmI(req, ctx) {
                seen('whoAmI', req, ctx);
                return { keyId: 'k-1', admin: false, teamId: 'team-a' };
              },
              async createRegistrationToken(req, ctx) {
                seen('createRegistrationToken', req, ctx);
                return { id: 't-1', token: 'crt_secret', expiresAt: new Date('2026-01-01T01:00:00Z') };
              },
              async listHosts(req, ctx) {
                seen('listHosts', req, ctx);
                return {
                  hosts: [
                    {
                      id: 'h-1',
                      name: 'node-1',
                      status: HostStatus.HOST_STATUS_ONLINE,
                      agentAddress: '10.0.0.1:1',
                      capacity: { cpuMillis: 2000, memoryMb: 4096, diskMb: 1000 },
                      usage: { cpuMillis: 500, memoryMb: 256, diskMb: 10 },
                      drivers: [{ name: 'process', healthy: true, version: '1', detail: '' }],
                      labels: { zone: 'a' },
                      teamId: '',
                      lastHeartbeatAt: new Date('2026-01-01T00:00:05Z'),
                      createdAt: new Date('2026-01-01T00:00:00Z'),
                    },
                  ],
                };
              },
              async getHost(req, ctx) {
                seen('getHost', req, ctx);
                if (req.id === 'backend-down') throw new UnavailableError('service unavailable');
                throw new NotFoundError('resource not found');
              },
              async createWorkload(req, ctx) {
                seen('createWorkload', req, ctx);
                if (req.driver === 'docker') throw new InvalidArgumentError('driver must be one of process, podman, qemu', { field: 'driver' });
                return {
                  workload: workload({
                    name: req.name,
                    driver: req.driver,
                    command: req.command,
                    envKeys: Object.keys(req.env),
                    state: InstanceState.INSTANCE_STATE_PENDING,
                    hostId: '',
                    image: req.image,
                    resources: req.resources,
                    routes: req.routes,
                    vm: req.vm,
                  }),
                };
              },
              async pauseWorkload(req, ctx) {
                seen('pauseWorkload', req, ctx);
                return { workload: workload({ id: req.id, state: InstanceState.INSTANCE_STATE_PAUSED }) };
              },
              async resumeWorkload(req, ctx) {
                seen('resumeWorkload', req, ctx);
                if (req.id !== 'w-1') throw new FailedPreconditionError('the resource is not in a state that allows this operation');
                return { workload: workload({ id: req.id, state: InstanceState.INSTANCE_STATE_RUNNING }) };
              },
              async getWorkload(req, ctx) {
                seen('getWorkload', req, ctx);
                if (req.id !== 'w-1') throw new NotFoundError('resource not found');
                return {
                  workload: workload({
                    routes: [{ name: 'http', port: 8080, protocol: 'tcp' }],
                    ports: [{ name: 'http', guestPort: 8080, hostPort: 20000, protocol: 'tcp' }],
                    resources: { vcpus: 1, memoryMb: 256 },
                  }),
                };
              },
              async listWorkloads(req, ctx) {
                seen('listWorkloads', req, ctx);
                return { workloads: [workload({}), workload({ id: 'w-2', name: 'batch', state: InstanceState.INSTANCE_STATE_STOPPED, exited: true, exitCode: 0, hostId: '' })] };
              },
              async deleteWorkload(req, ctx) {
                seen('deleteWorkload', req, ctx);
                return { workload: workload({ id: req.id, state: req.purge ? InstanceState.INSTANCE_STATE_RETIRED : InstanceState.INSTANCE_STATE_STOPPING }) };
              },
              async getWorkloadLogs(req, ctx) {
                seen('getWorkloadLogs', req, ctx);
                return { data: Buffer.from('hello\nworld\n'), truncated: req.tailBytes > 0 };
              },
            },
            silentLogger,
          ),
          },
        },
      ],
    });
  });
  afterAll(() => server.stop());

  async function corral(args: string[], env: Record<string, string | undefined> = {}) {
    const stdout = new Capture();
    const stderr = new Capture();
    const code = await runCli(args, { stdout, stderr, env: { CORRAL_ADDR: server.address, CORRAL_API_KEY: KEY, ...env } });
    return { code, stdout: stdout.text, stderr: stderr.text };
  }

  it('whoami, as a table and as JSON', async () => {
    const table = await corral(['whoami']);
    expect(table).toMatchObject({ code: 0, stderr: '' });
    expect(table.stdout).toMatch(/Key ID:\s+k-1/);
    expect(table.stdout).toMatch(/Team:\s+team-a/);
    const json = await corral(['whoami', '-o', 'json']);
    expect(JSON.parse(json.stdout)).toEqual({ keyId: 'k-1', admin: false, teamId: 'team-a' });
    expect(received.at(-1)?.authorization).toEqual([`Bearer ${KEY}`]);
  });

  it('takes the address and key from flags too, before or after the command', async () => {
    const res = await corral(['--addr', server.address, 'whoami', '--api-key', KEY, '--output', 'json'], { CORRAL_ADDR: '127.0.0.1:1', CORRAL_API_KEY: 'crl_wrong000_x' });
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout).keyId).toBe('k-1');
  });

  it('runs a workload with the command after --, and env from -e', async () => {
    const res = await corral(['workloads', 'run', 'web', '--driver', 'process', '-e', 'A=1', '-e', 'B=x=y', '--', 'sh', '-c', 'echo hi --not-an-option', '-o'], {});
    expect(res).toMatchObject({ code: 0, stderr: '' });
    expect(received.at(-1)?.request).toEqual({ name: 'web', driver: 'process', command: ['sh', '-c', 'echo hi --not-an-option', '-o'], env: { A: '1', B: 'x=y' }, image: '', routes: [] });
    expect(res.stdout).toMatch(/State:\s+pending/);
    expect(res.stdout).toMatch(/Host:\s+-/);
  });

  it('runs a workload with an image, ports, memory and vcpus, and no command', async () => {
    const res = await corral(['workloads', 'run', 'pod', '--driver', 'podman', '--image', 'localhost/busybox', '--port', 'http:8080', '-p', 'dns:53/udp', '--memory', '256', '--vcpus', '2']);
    expect(res).toMatchObject({ code: 0, stderr: '' });
    expect(received.at(-1)?.request).toEqual({
      name: 'pod',
      driver: 'podman',
      command: [],
      env: {},
      image: 'localhost/busybox',
      resources: { vcpus: 2, memoryMb: 256 },
      routes: [
        { name: 'http', port: 8080, protocol: 'tcp' },
        { name: 'dns', port: 53, protocol: 'udp' },
      ],
    });
    expect(res.stdout).toMatch(/Image:\s+localhost\/busybox/);
    expect(res.stdout).toMatch(/Resources:\s+2 vCPU, 256 MB/);
    expect(res.stdout).toMatch(/Routes:\s+http 8080\/tcp, dns 53\/udp/);
  });

  it('runs a qemu microvm from a kernel', async () => {
    const res = await corral(['workloads', 'run', 'vm', '--driver', 'qemu', '--kernel', '/boot/vmlinuz', '--initrd', '/boot/initrd', '--kernel-args', 'console=ttyS0', '-o', 'json']);
    expect(res.code).toBe(0);
    expect(received.at(-1)?.request).toMatchObject({ vm: { mode: 'microvm', kernel: '/boot/vmlinuz', initrd: '/boot/initrd', kernelArgs: 'console=ttyS0' } });
    expect(JSON.parse(res.stdout).vm).toEqual({ mode: 'microvm', kernel: '/boot/vmlinuz', initrd: '/boot/initrd', kernelArgs: 'console=ttyS0', rootDisk: null });
  });

  it('pauses and resumes a workload', async () => {
    const paused = await corral(['workloads', 'pause', 'w-1']);
    expect(paused).toMatchObject({ code: 0, stderr: '' });
    expect(paused.stdout).toMatch(/State:\s+paused/);
    expect(received.at(-1)).toMatchObject({ method: 'pauseWorkload', request: { id: 'w-1' } });
    expect(JSON.parse((await corral(['workloads', 'resume', 'w-1', '-o', 'json'])).stdout).state).toBe('running');
    expect(await corral(['workloads', 'resume', 'w-stopped'])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'error: the resource is not in a state that allows this operation\n',
    });
  });

  it('lists workloads as a table and as REST-shaped JSON', async () => {
    const table = await corral(['workloads', 'list']);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+NAME\s+STATE\s+DRIVER\s+HOST\s+EXIT\s+CREATED$/);
    expect(lines[1]).toMatch(/^w-1\s+web\s+running\s+process\s+h-1\s+-\s+2026-01-01T00:00:00.000Z$/);
    expect(lines[2]).toMatch(/^w-2\s+batch\s+stopped\s+process\s+-\s+0\s+/);
    const json = JSON.parse((await corral(['workloads', 'ls', '-o', 'json'])).stdout);
    expect(json.workloads[1]).toEqual({
      id: 'w-2',
      name: 'batch',
      teamId: 'team-a',
      driver: 'process',
      command: ['sleep', '60'],
      envKeys: ['A'],
      state: 'stopped',
      hostId: null,
      exitCode: 0,
      reason: null,
      createdAt: '2026-01-01T00:00:00.000Z',
      updatedAt: '2026-01-01T00:01:00.000Z',
      image: null,
      resources: { vcpus: null, memoryMb: null },
      routes: [],
      ports: [],
      vm: null,
    });
  });

  it('gets, stops (and rm) and reads logs of a workload', async () => {
    const details = (await corral(['workloads', 'get', 'w-1'])).stdout;
    expect(details).toMatch(/Command:\s+\["sleep","60"\]/);
    expect(details).toMatch(/Ports:\s+http 20000->8080\/tcp/);
    expect(details).toMatch(/Resources:\s+1 vCPU, 256 MB/);
    expect(JSON.parse((await corral(['workloads', 'get', 'w-1', '-o', 'json'])).stdout).ports).toEqual([{ name: 'http', guestPort: 8080, hostPort: 20000, protocol: 'tcp' }]);
    expect(JSON.parse((await corral(['workloads', 'stop', 'w-1', '-o', 'json'])).stdout).state).toBe('stopping');
    expect(received.at(-1)).toMatchObject({ method: 'deleteWorkload', request: { id: 'w-1', purge: false } });
    // rm tears down: refused while it runs (nothing is deleted), unless --force.
    const refused = await corral(['workloads', 'rm', 'w-1']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/is running: stop it first, or use --force/);
    expect(received.at(-1)).toMatchObject({ method: 'getWorkload' });
    const removed = await corral(['workloads', 'rm', 'w-1', '--force', '-o', 'json']);
    expect(removed.code).toBe(0);
    expect(JSON.parse(removed.stdout).state).toBe('retired');
    expect(received.at(-1)).toMatchObject({ method: 'deleteWorkload', request: { id: 'w-1', purge: true } });
    expect(JSON.parse((await corral(['workloads', 'stop', 'w-1', '--purge', '-o', 'json'])).stdout).state).toBe('retired');
    expect(received.at(-1)).toMatchObject({ method: 'deleteWorkload', request: { id: 'w-1', purge: true } });

    const logs = await corral(['workloads', 'logs', 'w-1', '--tail', '100']);
    expect(logs.stdout).toBe('hello\nworld\n');
    expect(logs.stderr).toMatch(/left out/);
    expect(received.at(-1)?.request).toEqual({ id: 'w-1', tailBytes: 100 });
    expect(JSON.parse((await corral(['workloads', 'logs', 'w-1', '-o', 'json'])).stdout)).toEqual({ data: 'hello\nworld\n', truncated: false });
  });

  it('follows logs with -f until the stream ends', async () => {
    const res = await corral(['workloads', 'logs', 'w-1', '-f', '--tail', '10']);
    expect(res).toMatchObject({ code: 0, stdout: 'first\nsecond\n' });
    expect(received.at(-1)).toMatchObject({ method: 'streamWorkloadLogs', request: { id: 'w-1', tailBytes: 10, follow: true } });
    expect(process.listenerCount('SIGINT')).toBe(0);
  });

  it('lists hosts and creates registration tokens', async () => {
    const hosts = await corral(['hosts', 'list']);
    expect(hosts.stdout).toMatch(/node-1\s+online\s+-\s+500\/2000m\s+256\/4096MB\s+process/);
    expect(JSON.parse((await corral(['hosts', 'list', '-o', 'json'])).stdout).hosts[0]).toMatchObject({ status: 'online', teamId: null, labels: { zone: 'a' } });
    const token = await corral(['token', 'create', '--ttl', '600', '--description', 'rack 4']);
    expect(token.stdout).toMatch(/Token:\s+crt_secret/);
    expect(received.at(-1)?.request).toEqual({ ttlSeconds: 600, description: 'rack 4' });
  });

  it('prints server errors with the field and exits 1', async () => {
    const invalid = await corral(['workloads', 'run', 'web', '--driver', 'docker', '--', 'x']);
    expect(invalid).toEqual({ code: 1, stdout: '', stderr: 'error: driver must be one of process, podman, qemu (field: driver)\n' });
    expect(await corral(['workloads', 'get', 'nope'])).toEqual({ code: 1, stdout: '', stderr: 'error: resource not found\n' });
    expect(await corral(['hosts', 'get', 'nope'])).toMatchObject({ code: 1, stderr: 'error: resource not found\n' });
    expect(await corral(['whoami'], { CORRAL_API_KEY: 'crl_wrong000_x' })).toMatchObject({ code: 1, stderr: 'error: authentication required\n' });
  });

  it('says when the gateway cannot be reached, as opposed to a service behind it', async () => {
    const res = await corral(['whoami'], { CORRAL_ADDR: '127.0.0.1:1' });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/^error: cannot reach the Corral gateway at 127\.0\.0\.1:1: .*ECONNREFUSED/);
    expect(await corral(['hosts', 'get', 'backend-down'])).toMatchObject({ code: 1, stderr: 'error: service unavailable\n' });
  });

  it.each([
    [['workloads', 'run', 'web', '--', 'x'], /required option '--driver <driver>'/],
    [['workloads', 'run', 'web', '--driver', 'process'], /a process workload needs a command/],
    [['workloads', 'run', 'web', '--driver', 'process', '--port', 'http', '--', 'x'], /NAME:PORT/],
    [['workloads', 'run', 'web', '--driver', 'process', '--port', 'http:99999', '--', 'x'], /from 1 to 65535/],
    [['workloads', 'run', 'web', '--driver', 'process', '--port', 'a:1', '--port', 'a:2', '--', 'x'], /a is given twice/],
    [['workloads', 'run', 'web', '--driver', 'podman', '--image', 'x', '--memory', 'lots'], /positive integer/],
    [['workloads', 'run', 'web', '--driver', 'qemu', '--vm-mode', 'container'], /Allowed choices are microvm, unikernel/],
    [['workloads', 'pause'], /missing required argument 'id'/],
    [['workloads', 'run', 'web', '--driver', 'process', '-e', 'NOEQUALS', '--', 'x'], /KEY=VALUE/],
    [['workloads', 'logs', 'w-1', '--tail', 'many'], /positive integer/],
    [['token', 'create', '--ttl', '-5'], /.+/],
    [['whoami', '-o', 'yaml'], /Allowed choices are table, json/],
    [['workloads', 'frobnicate'], /unknown command/],
    [['nonsense'], /unknown command/],
    [['workloads', 'list', '--bogus'], /unknown option/],
    [[], /Usage: corral/],
  ])('exits 2 on the usage error in %j', async (args, message) => {
    const res = await corral(args);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(message);
  });

  it('exits 2 without an API key, before calling anything', async () => {
    const before = received.length;
    const res = await corral(['workloads', 'list'], { CORRAL_API_KEY: undefined });
    expect(res).toEqual({ code: 2, stdout: '', stderr: 'error: no API key: set CORRAL_API_KEY or pass --api-key\n' });
    expect(received.length).toBe(before);
  });

  it('prints help and exits 0 when asked', async () => {
    const res = await corral(['workloads', '--help']);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/run \[options\] <name> \[command\.\.\.\]/);
    expect(res.stdout).toMatch(/pause <id>/);
    expect(res.stdout).toMatch(/resume <id>/);
  });
});
