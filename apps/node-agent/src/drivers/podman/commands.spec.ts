import { AlreadyExistsError, ConflictError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from '@corral/domain';
import { ExecError, type ExecResult } from '@corral/exec';
import type { TaskSpec } from '../driver';
import {
  ContainerCommandExit,
  DEFAULT_PODMAN_CLI,
  envInjection,
  mapExecError,
  mapPodmanError,
  mapRunError,
  parseInfo,
  parseInspect,
  parsePs,
  parseVersion,
  podmanExec,
  podmanImport,
  podmanInspect,
  podmanKill,
  podmanRm,
  podmanRun,
  podmanWait,
  type PodmanRunSettings,
} from './commands';

const settings: PodmanRunSettings = {
  runtime: 'runc',
  ulimits: { nofile: { soft: 1024, hard: 1024 }, nproc: { soft: 4096, hard: 4096 } },
  hostIp: '127.0.0.1',
  logDriver: 'k8s-file',
};

const SECRET = 's3cr3t-value-do-not-leak';

const spec = (extra: Partial<TaskSpec> = {}): TaskSpec => ({
  workloadId: 'wl-1',
  name: 'web',
  image: 'localhost/corral-busybox:test',
  command: ['httpd', '-f', '-p', '8080', '-h', '/www'],
  env: { GREETING: 'hello world', API_TOKEN: SECRET, MULTI: `line1\n${SECRET}`, PATH: '/bin:/usr/bin' },
  labels: { team: 'a', 'corral.workload-id': 'forged' },
  resources: { vcpus: 0.5, memoryMb: 64 },
  ports: [
    { name: 'http', guestPort: 8080, hostPort: 18080, protocol: 'tcp' },
    { name: 'dns', guestPort: 53, hostPort: 18053, protocol: 'udp' },
  ],
  ...extra,
});

const result = (stderr: string, exitCode: number | null = 125, stdout = ''): ExecResult => ({
  program: '/usr/bin/podman',
  exitCode,
  signal: null,
  stdout,
  stderr,
  durationMs: 5,
});

describe('podmanRun', () => {
  const ENV_FILE = '/dev/shm/corral-podman-env-x/env';

  it('builds the run argv: name, labels, runtime, ulimits, resources, ports, then -- image command', () => {
    const cmd = podmanRun(spec(), settings, DEFAULT_PODMAN_CLI, ENV_FILE);
    expect(cmd.program).toBe('podman');
    expect(cmd.args).toEqual([
      'run',
      '--detach',
      '--pull',
      'never',
      '--http-proxy=false',
      '--name',
      'corral-wl-1',
      '--label',
      'team=a',
      '--label',
      'corral.workload-id=wl-1',
      '--runtime',
      'runc',
      '--ulimit',
      'nofile=1024:1024',
      '--ulimit',
      'nproc=4096:4096',
      '--cpus',
      '0.5',
      '--memory',
      '64m',
      '--log-driver',
      'k8s-file',
      '--env-file',
      ENV_FILE,
      '--env',
      'GREETING',
      '--env',
      'API_TOKEN',
      '--env',
      'MULTI',
      '--publish',
      '127.0.0.1:18080:8080/tcp',
      '--publish',
      '127.0.0.1:18053:53/udp',
      '--',
      'localhost/corral-busybox:test',
      'httpd',
      '-f',
      '-p',
      '8080',
      '-h',
      '/www',
    ]);
  });

  it('keeps every env value out of argv: podman takes them from its own environment by name', () => {
    const cmd = podmanRun(spec(), settings, DEFAULT_PODMAN_CLI, ENV_FILE);
    for (const arg of cmd.args) {
      expect(arg).not.toContain(SECRET);
      expect(arg).not.toContain('hello world');
      expect(arg).not.toContain('/bin:/usr/bin');
    }
    expect(cmd.env).toEqual({ GREETING: 'hello world', API_TOKEN: SECRET, MULTI: `line1\n${SECRET}` });
    expect(cmd.stdin).toBeUndefined();
  });

  it('puts variables podman itself acts on (PATH, LD_*...) in the env file instead of its environment', () => {
    const injection = envInjection({ PATH: '/opt/bin:/bin', LD_PRELOAD: '/x.so', http_proxy: 'http://p', TOKEN: SECRET, GOOGLE_KEY: 'a\nb' });
    expect(injection).toEqual({
      names: ['TOKEN', 'GOOGLE_KEY'],
      processEnv: { TOKEN: SECRET, GOOGLE_KEY: 'a\nb' },
      envFile: 'PATH=/opt/bin:/bin\nLD_PRELOAD=/x.so\nhttp_proxy=http://p\n',
    });
    // Without a path for that file the command cannot be built.
    expect(() => podmanRun(spec(), settings)).toThrow('env file');
  });

  it('passes no env options when the env is empty', () => {
    const cmd = podmanRun(spec({ env: {} }), settings);
    expect(cmd.args).not.toContain('--env-file');
    expect(cmd.args).not.toContain('--env');
    expect(cmd.env).toEqual({});
  });

  it('uses podman defaults for what the settings leave out', () => {
    const cmd = podmanRun(spec({ resources: undefined, ports: undefined, labels: {}, env: {} }), { ...settings, runtime: undefined, logDriver: undefined });
    expect(cmd.args).not.toContain('--runtime');
    expect(cmd.args).not.toContain('--cpus');
    expect(cmd.args).not.toContain('--log-driver');
    expect(cmd.args).toContain('--ulimit'); // always explicit
  });

  it('refuses what podman would misread or what cannot be passed safely', () => {
    expect(() => podmanRun(spec({ image: undefined }), settings)).toThrow(InvalidArgumentError);
    expect(() => podmanRun(spec({ image: '--privileged' }), settings)).toThrow(InvalidArgumentError);
    expect(() => podmanRun(spec({ workloadId: '../x' }), settings)).toThrow(InvalidArgumentError);
    expect(() => podmanRun(spec({ ports: [{ name: 'x', guestPort: 0, hostPort: 1, protocol: 'tcp' }] }), settings)).toThrow(InvalidArgumentError);
    expect(() => podmanRun(spec({ resources: { memoryMb: 4 } }), settings)).toThrow(InvalidArgumentError);
    expect(() => podmanRun(spec({ resources: { vcpus: 0 } }), settings)).toThrow(InvalidArgumentError);
    expect(() => podmanRun(spec({ labels: { 'a=b': 'c' } }), settings)).toThrow(InvalidArgumentError);
    expect(() => podmanRun(spec({ env: { 'BAD-NAME': 'x' } }), settings)).toThrow(InvalidArgumentError);
    // PATH steers podman itself: it goes through the env file, which holds no line breaks.
    expect(() => podmanRun(spec({ env: { PATH: 'a\nb' } }), settings, DEFAULT_PODMAN_CLI, ENV_FILE)).toThrow(InvalidArgumentError);
    expect(() => podmanRun(spec({ env: { LD_PRELOAD: 'a\nb' } }), settings, DEFAULT_PODMAN_CLI, ENV_FILE)).toThrow(InvalidArgumentError);
  });

  it('refuses values an env file cannot carry for names that must go through it', () => {
    expect(() => envInjection({ PATH: 'x'.repeat(70_000) })).toThrow(InvalidArgumentError);
    expect(envInjection({ BIG: 'x'.repeat(70_000) }).names).toEqual(['BIG']);
  });

  it('maps run failures to Corral errors', () => {
    const what = { name: 'corral-wl-1', image: 'localhost/x:1', program: 'httpd' };
    expect(
      mapRunError(result('Error: creating container storage: the container name "corral-wl-1" is already in use by 49c5. You have to remove that container to be able to reuse that name: that name is already in use'), what),
    ).toBeInstanceOf(AlreadyExistsError);
    const missing = mapRunError(result('Error: localhost/x:1: image not known'), what);
    expect(missing).toBeInstanceOf(FailedPreconditionError);
    expect(missing).toMatchObject({ field: 'spec.image' });
    expect(mapRunError(result('Error: cannot listen on the TCP port: listen tcp4 127.0.0.1:18999: bind: address already in use'), what)).toBeInstanceOf(ConflictError);
    const notFound = mapRunError(
      result('Error: runc: runc create failed: unable to start container process: exec: "httpd": executable file not found in $PATH: OCI runtime attempted to invoke a command that was not found', 127),
      what,
    );
    expect(notFound).toMatchObject({ field: 'spec.command[0]' });
    expect(mapRunError(result('Error: runc: error setting rlimits for ready process: error setting rlimit type 7: operation not permitted: OCI permission denied', 126), what)).toBeInstanceOf(
      FailedPreconditionError,
    );
    expect(mapRunError(result('Error: something else entirely'), what)).toBeInstanceOf(ExecError);
  });
});

describe('podman error mapping', () => {
  it.each([
    'Error: no container with name or ID "nope" found: no such container',
    'Error: inspecting object: no such container nope',
    'Error: inspecting object: no such object: "nope"',
  ])('no such container is NotFoundError: %s', (stderr) => {
    const err = mapPodmanError(result(stderr), 'nope');
    expect(err).toBeInstanceOf(NotFoundError);
    expect(err.message).toBe('container nope not found');
    expect((err as NotFoundError).cause).toBeInstanceOf(ExecError);
  });

  it('a container in the wrong state is a failed precondition', () => {
    const err = mapPodmanError(result('Error: "d4a9" is not paused, can\'t unpause: container state improper'), 'c1');
    expect(err).toBeInstanceOf(FailedPreconditionError);
    expect(err.message).toContain('is not paused');
  });

  it('anything else is the generic ExecError, which keeps no argv', () => {
    const err = mapPodmanError(result('Error: database is locked'), 'c1');
    expect(err).toBeInstanceOf(ExecError);
    expect((err as ExecError).stderrTail).toContain('database is locked');
  });

  it('tells a failing command inside the container from a failing podman exec', () => {
    const own = mapExecError(result('oops\n', 3, 'partial'), 'c1');
    expect(own).toBeInstanceOf(ContainerCommandExit);
    expect((own as ContainerCommandExit).outcome).toEqual({ exitCode: 3, stdout: 'partial', stderr: 'oops\n' });
    expect(mapExecError(result('Error: no container with name or ID "c1" found: no such container'), 'c1')).toBeInstanceOf(NotFoundError);
    expect(mapExecError(result('Error: can only create exec sessions on running containers: container state improper', 255), 'c1')).toBeInstanceOf(
      FailedPreconditionError,
    );
    expect(mapExecError(result('ssh-ish failure\n', 255), 'c1')).toBeInstanceOf(ContainerCommandExit);
  });
});

describe('inspect and ps parsers', () => {
  // As printed by podman 4.3 for the driver's template.
  const templated = (state: Record<string, unknown>) =>
    JSON.stringify({
      Id: 'a'.repeat(64),
      Name: 'corral-wl-1',
      State: {
        OciVersion: '1.0.2-dev',
        Status: 'running',
        Running: true,
        Paused: false,
        OOMKilled: false,
        Pid: 1672,
        ExitCode: 0,
        Error: '',
        StartedAt: '2026-11-23T18:18:10.137076175Z',
        FinishedAt: '0001-01-01T00:00:00Z',
        ...state,
      },
      Labels: { 'corral.workload-id': 'wl-1' },
      LogConfig: { Type: 'k8s-file', Config: null, Path: '/var/lib/containers/storage/overlay-containers/aaa/userdata/ctr.log', Tag: '', Size: '0B' },
    }) + ' ';

  it('reads a running container', () => {
    expect(parseInspect(templated({}))).toEqual({
      id: 'a'.repeat(64),
      name: 'corral-wl-1',
      status: 'running',
      running: true,
      paused: false,
      exitCode: 0,
      oomKilled: false,
      error: '',
      startedAt: '2026-11-23T18:18:10.137076175Z',
      finishedAt: undefined,
      labels: { 'corral.workload-id': 'wl-1' },
      logDriver: 'k8s-file',
      logPath: '/var/lib/containers/storage/overlay-containers/aaa/userdata/ctr.log',
    });
  });

  it('reads paused, exited and OOM-killed containers', () => {
    expect(parseInspect(templated({ Status: 'paused', Paused: true }))).toMatchObject({ status: 'paused', paused: true, running: true });
    expect(parseInspect(templated({ Status: 'exited', Running: false, ExitCode: 3, FinishedAt: '2026-11-23T18:18:31Z' }))).toMatchObject({
      status: 'exited',
      running: false,
      exitCode: 3,
      finishedAt: '2026-11-23T18:18:31Z',
    });
    expect(parseInspect(templated({ Status: 'exited', Running: false, ExitCode: 137, OOMKilled: true }))).toMatchObject({ oomKilled: true, exitCode: 137 });
  });

  it("also reads podman's full inspect output (an array), ignoring Config.Env", () => {
    const full = JSON.stringify([
      {
        Id: 'b'.repeat(64),
        Name: 'x',
        State: { Status: 'exited', Running: false, Paused: false, ExitCode: 7 },
        Config: { Env: [`TOKEN=${SECRET}`], Labels: { 'corral.workload-id': 'wl-2' } },
        HostConfig: { LogConfig: { Type: 'journald', Path: '' } },
      },
    ]);
    const parsed = parseInspect(full);
    expect(parsed).toMatchObject({ id: 'b'.repeat(64), status: 'exited', exitCode: 7, labels: { 'corral.workload-id': 'wl-2' }, logDriver: 'journald', logPath: undefined });
    expect(JSON.stringify(parsed)).not.toContain(SECRET);
  });

  it('rejects output that is not a container', () => {
    expect(() => parseInspect('not json')).toThrow('not JSON');
    expect(() => parseInspect('[]')).toThrow('no container');
  });

  it('the inspect command prints only the fields the driver needs', () => {
    const cmd = podmanInspect('c1');
    expect(cmd.args.slice(0, 3)).toEqual(['container', 'inspect', '--format']);
    expect(cmd.args[3]).not.toContain('Env');
    expect(cmd.args.slice(-2)).toEqual(['--', 'c1']);
  });

  it('reads podman ps --format json', () => {
    const stdout = JSON.stringify([
      {
        AutoRemove: false,
        Command: ['httpd', '-f'],
        Exited: true,
        ExitCode: 137,
        Id: 'c'.repeat(64),
        Image: 'localhost/exp-bb:1',
        Labels: { 'corral.workload-id': 'wl-3', team: 'a' },
        Names: ['corral-wl-3'],
        State: 'exited',
        Created: 1795457889,
      },
      { Id: 'd'.repeat(64), Labels: null, Names: ['other'], State: 'running' },
    ]);
    expect(parsePs(stdout)).toEqual([
      {
        id: 'c'.repeat(64),
        names: ['corral-wl-3'],
        workloadId: 'wl-3',
        state: 'exited',
        exitCode: 137,
        image: 'localhost/exp-bb:1',
        createdAt: new Date(1795457889000).toISOString(),
        labels: { 'corral.workload-id': 'wl-3', team: 'a' },
      },
      { id: 'd'.repeat(64), names: ['other'], workloadId: undefined, state: 'running', exitCode: undefined, image: '', createdAt: undefined, labels: {} },
    ]);
    expect(parsePs('[]\n')).toEqual([]);
    expect(parsePs('')).toEqual([]);
  });

  it('reads version and info', () => {
    expect(parseVersion('{"Client":{"APIVersion":"4.3.1","Version":"4.3.1","OsArch":"linux/amd64"}}')).toBe('4.3.1');
    expect(
      parseInfo(
        JSON.stringify({
          host: { cgroupManager: 'cgroupfs', cgroupVersion: 'v1', ociRuntime: { name: 'runc', path: '/usr/bin/runc' }, security: { rootless: false } },
          store: { graphDriverName: 'overlay' },
        }),
      ),
    ).toEqual({ ociRuntime: 'runc', cgroupVersion: 'v1', cgroupManager: 'cgroupfs', rootless: false, graphDriver: 'overlay' });
  });
});

describe('other commands', () => {
  it('builds lifecycle argv with the container after --', () => {
    const cli = { program: '/usr/bin/podman', globalArgs: ['--cgroup-manager', 'cgroupfs'] };
    expect(podmanKill('c1', 'SIGTERM', cli).args).toEqual(['--cgroup-manager', 'cgroupfs', 'kill', '--signal', 'SIGTERM', '--', 'c1']);
    expect(podmanKill('c1', 'SIGTERM', cli).program).toBe('/usr/bin/podman');
    expect(podmanRm('c1').args).toEqual(['rm', '--force', '--time', '0', '--volumes', '--', 'c1']);
    expect(podmanWait('c1', 2500)).toMatchObject({ args: ['wait', '--interval', '100ms', '--', 'c1'], timeoutMs: 2500 });
    expect(podmanWait('c1', 0).parse('3\n', '')).toBe(3);
  });

  it('runs exec interactively only when there is stdin', () => {
    expect(podmanExec('c1', ['sh', '-c', 'echo $X'], { timeoutMs: 1000 }).args).toEqual(['exec', '--', 'c1', 'sh', '-c', 'echo $X']);
    const withInput = podmanExec('c1', ['cat'], { stdin: 'hi', timeoutMs: 1000 });
    expect(withInput.args).toEqual(['exec', '--interactive', '--', 'c1', 'cat']);
    expect(withInput.stdin).toBe('hi');
    expect(() => podmanExec('c1', [], { timeoutMs: 1000 })).toThrow(InvalidArgumentError);
  });

  it('imports from a path, a URL or stdin only', () => {
    expect(podmanImport('/tmp/x.tar', 'localhost/x:1').args).toEqual(['import', '--quiet', '/tmp/x.tar', 'localhost/x:1']);
    expect(podmanImport('http://127.0.0.1:1/a', 'localhost/x:1').parse('sha256:' + 'e'.repeat(64) + '\n', '')).toBe('e'.repeat(64));
    expect(() => podmanImport('relative.tar', 'x')).toThrow(InvalidArgumentError);
    expect(() => podmanImport('/tmp/x.tar', '--quiet')).toThrow(InvalidArgumentError);
  });
});
