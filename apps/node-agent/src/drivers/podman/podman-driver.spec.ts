import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { NotFoundError } from '@corral/domain';
import { ExecError, type Command, type ExecResult, type Executor } from '@corral/exec';
import type { Logger } from '@corral/logging';
import type { TaskSpec } from '../driver';
import { hasExec, hasPause } from '../driver';
import { PodmanDriver } from './podman-driver';

// The driver's decisions with a scripted executor: no podman needed. Each
// podman call is answered by `respond`, which sees the Command (argv, stdin,
// env) exactly as the executor would run it.

type Responder = (cmd: Command<unknown>) => { stdout?: string; stderr?: string; exitCode?: number } | Error;

class ScriptedExecutor implements Executor {
  readonly calls: Command<unknown>[] = [];
  readonly programs = [{ name: 'podman', path: '/usr/bin/podman' }];

  constructor(private readonly respond: Responder) {}

  resolve(): string {
    return '/usr/bin/podman';
  }

  async run<T>(command: Command<T>): Promise<T> {
    this.calls.push(command as Command<unknown>);
    const answer = this.respond(command as Command<unknown>);
    if (answer instanceof Error) throw answer;
    const result: ExecResult = { program: '/usr/bin/podman', exitCode: answer.exitCode ?? 0, signal: null, stdout: answer.stdout ?? '', stderr: answer.stderr ?? '', durationMs: 1 };
    if (result.exitCode !== 0) throw command.mapError(result);
    return command.parse(result.stdout, result.stderr);
  }

  verbs(): string[] {
    return this.calls.map((c) => c.args.find((a) => !a.startsWith('-') && !['cgroupfs', 'file', 'container'].includes(a)) ?? '').filter((verb) => verb !== 'ps');
  }
}

const VERSION = JSON.stringify({ Client: { Version: '4.3.1' } });
const info = (ociRuntime = 'runc') =>
  JSON.stringify({ host: { cgroupManager: 'cgroupfs', cgroupVersion: 'v1', ociRuntime: { name: ociRuntime }, security: { rootless: false } }, store: { graphDriverName: 'overlay' } });
const ID = 'f'.repeat(64);
const inspectOut = (state: Record<string, unknown>) =>
  JSON.stringify({ Id: ID, Name: 'corral-wl-1', State: { Status: 'running', Running: true, Paused: false, ExitCode: 0, ...state }, Labels: { 'corral.workload-id': 'wl-1' }, LogConfig: { Type: 'k8s-file', Path: '/nonexistent/ctr.log' } });

const SECRET = 'hunter2-secret';
const spec: TaskSpec = { workloadId: 'wl-1', name: 'web', image: 'localhost/img:1', command: ['sleep', '30'], env: { TOKEN: SECRET }, labels: {} };

function capturingLogger(lines: string[]): Logger {
  const log = (message: string, fields?: unknown) => lines.push(`${message} ${JSON.stringify(fields ?? {}, (_k, v) => (v instanceof Error ? { ...v, message: v.message } : v))}`);
  const logger: Logger = { error: log, warn: log, info: log, debug: log, child: () => logger };
  return logger;
}

const basics: Responder = (cmd) => {
  if (cmd.args.includes('version')) return { stdout: VERSION };
  if (cmd.args.includes('info')) return { stdout: info() };
  return new Error(`unexpected podman ${cmd.args.join(' ')}`);
};

describe('PodmanDriver (scripted podman)', () => {
  const drivers: PodmanDriver[] = [];
  const make = (respond: Responder, extra: Partial<ConstructorParameters<typeof PodmanDriver>[0]> = {}, logs: string[] = []) => {
    const executor = new ScriptedExecutor(respond);
    const driver = new PodmanDriver({ executor, logger: capturingLogger(logs), exitPollMs: 10, hardLimits: { nofile: 20000, nproc: 96364 }, ...extra });
    drivers.push(driver);
    return { driver, executor };
  };
  afterEach(async () => {
    await Promise.all(drivers.splice(0).map((d) => d.close()));
  });

  it('offers logs, pause and exec', () => {
    const { driver } = make(basics);
    expect(hasPause(driver)).toBe(true);
    expect(hasExec(driver)).toBe(true);
  });

  it('fingerprints version, runtime, cgroups and the ulimits it will set', async () => {
    const { driver } = make(basics, { nofile: { soft: 1024, hard: 65536 } });
    const fp = await driver.fingerprint();
    expect(fp).toMatchObject({ name: 'podman', healthy: true, version: '4.3.1' });
    expect(fp.detail).toContain('runtime runc (podman default)');
    expect(fp.detail).toContain('cgroup v1 via cgroupfs');
    expect(fp.detail).toContain('nofile=1024:20000 nproc=4096:4096');
    expect(fp.detail).toContain('explicit: required');
  });

  it('names a runtime other than runc only when runc is missing', async () => {
    const { driver } = make((cmd) => (cmd.args.includes('info') ? { stdout: info('crun') } : basics(cmd)));
    const fp = await driver.fingerprint();
    expect(fp.detail).toMatch(/runtime (runc \(installed; preferred over podman's default crun|crun \(podman default; runc is not installed)/);
  });

  it('retries podman info with cgroupfs where systemd is missing, and keeps using it', async () => {
    const { driver, executor } = make((cmd) => {
      if (cmd.args.includes('info') && !cmd.args.includes('--cgroup-manager')) {
        return { exitCode: 125, stderr: 'Error: could not connect to dbus: systemd not running' };
      }
      if (cmd.args.includes('run')) return { stdout: `${ID}\n` };
      return basics(cmd);
    });
    const fp = await driver.fingerprint();
    expect(fp.healthy).toBe(true);
    expect(fp.detail).toContain('global options --cgroup-manager cgroupfs');
    await driver.start(spec);
    const run = executor.calls.find((c) => c.args.includes('run'));
    expect(run?.args.slice(0, 3)).toEqual(['--cgroup-manager', 'cgroupfs', 'run']);
  });

  it('is unhealthy, with the reason, when podman is missing or broken', async () => {
    const missing = make(() => new ExecError('podman is not installed on this machine', { program: 'podman', reason: 'not-installed' }));
    expect(await missing.driver.fingerprint()).toEqual({ name: 'podman', healthy: false, version: '', detail: 'podman is not installed' });
    const broken = make((cmd) => (cmd.args.includes('info') ? { exitCode: 125, stderr: 'Error: database locked' } : basics(cmd)));
    expect(await broken.driver.fingerprint()).toMatchObject({ healthy: false, version: '4.3.1', detail: 'podman info failed: database locked' });
    await expect(broken.driver.start(spec)).rejects.toThrow('podman is not usable on this host');
  });

  it('starts with env values out of argv and logs, and reports the exit through wait', async () => {
    const logs: string[] = [];
    let exited = false;
    let envFile: { path: string; text: string; mode: number; dirMode: number } | undefined;
    const { driver, executor } = make(
      (cmd) => {
        if (cmd.args.includes('run')) {
          const path = cmd.args[cmd.args.indexOf('--env-file') + 1];
          envFile = { path, text: readFileSync(path, 'utf8'), mode: statSync(path).mode & 0o777, dirMode: statSync(dirname(path)).mode & 0o777 };
          return { stdout: `${ID}\n` };
        }
        if (cmd.args.includes('ps')) return { stdout: JSON.stringify([{ Id: ID, State: exited ? 'exited' : 'running', ExitCode: 3, Labels: { 'corral.workload-id': 'wl-1' } }]) };
        if (cmd.args.includes('inspect')) return { stdout: inspectOut(exited ? { Status: 'exited', Running: false, ExitCode: 3 } : {}) };
        return basics(cmd);
      },
      {},
      logs,
    );
    const handle = await driver.start({ ...spec, env: { TOKEN: SECRET, PATH: `/opt/${SECRET}` } });
    expect(handle).toEqual({ driver: 'podman', workloadId: 'wl-1', displayId: ID.slice(0, 12), state: { containerId: ID, containerName: 'corral-wl-1' } });
    const run = executor.calls.find((c) => c.args.includes('run'));
    expect(run?.args.join(' ')).not.toContain(SECRET);
    expect(run?.args).toEqual(expect.arrayContaining(['--env', 'TOKEN']));
    expect(run?.env).toEqual({ TOKEN: SECRET });
    // PATH would steer podman itself: it went through a private env file, gone once podman had read it.
    expect(envFile).toMatchObject({ text: `PATH=/opt/${SECRET}\n`, mode: 0o600, dirMode: 0o700 });
    expect(existsSync(envFile?.path ?? '')).toBe(false);

    expect(await driver.inspect(handle)).toEqual({ running: true, paused: false });
    exited = true;
    await expect(driver.wait(handle)).resolves.toEqual({ exitCode: 3 });
    expect(logs.join('\n')).not.toContain(SECRET);
  });

  it('removes what a failed run left behind, unless the name belonged to another container', async () => {
    const failing = (stderr: string) =>
      make((cmd) => {
        if (cmd.args.includes('run')) return { exitCode: 126, stderr };
        if (cmd.args.includes('rm')) return {};
        return basics(cmd);
      });
    const portClash = failing('Error: cannot listen on the TCP port: listen tcp4 127.0.0.1:1: bind: address already in use');
    await expect(portClash.driver.start(spec)).rejects.toThrow('already in use');
    expect(portClash.executor.calls.at(-1)?.args).toEqual(['rm', '--force', '--time', '0', '--volumes', '--', 'corral-wl-1']);

    const nameClash = failing('Error: the container name "corral-wl-1" is already in use by abc: that name is already in use');
    await expect(nameClash.driver.start(spec)).rejects.toMatchObject({ name: 'AlreadyExistsError' });
    expect(nameClash.executor.calls.some((c) => c.args.includes('rm'))).toBe(false);
  });

  it('thaws a paused container before signalling it, and kills it when the grace period runs out', async () => {
    let state = 'paused';
    const { driver, executor } = make((cmd) => {
      if (cmd.args.includes('run')) return { stdout: `${ID}\n` };
      if (cmd.args.includes('ps')) return { stdout: JSON.stringify([{ Id: ID, State: state, ExitCode: 137 }]) };
      if (cmd.args.includes('inspect')) return { stdout: inspectOut(state === 'exited' ? { Status: 'exited', Running: false, ExitCode: 137 } : { Status: state, Paused: state === 'paused' }) };
      if (cmd.args.includes('unpause')) {
        state = 'running';
        return { stdout: ID };
      }
      if (cmd.args.includes('kill')) {
        if (cmd.args.includes('SIGKILL')) state = 'exited';
        return { stdout: ID };
      }
      if (cmd.args.includes('wait')) {
        return state === 'exited' ? { stdout: '137\n' } : new ExecError('timed out', { program: 'podman', reason: 'timeout' });
      }
      return basics(cmd);
    });
    const handle = await driver.start(spec);
    await driver.stop(handle, { timeoutMs: 50, signal: 'SIGTERM' });
    expect(executor.verbs().slice(3)).toEqual(['inspect', 'unpause', 'kill', 'wait', 'kill', 'wait', 'inspect']);
    expect(executor.calls.filter((c) => c.args.includes('kill')).map((c) => c.args[2])).toEqual(['SIGTERM', 'SIGKILL']);
    await expect(driver.wait(handle)).resolves.toEqual({ exitCode: 137 });
  });

  it('falls back to podman logs when the log file cannot be read, capping to the tail asked for', async () => {
    const { driver, executor } = make((cmd) => {
      if (cmd.args.includes('inspect')) return { stdout: inspectOut({}) };
      if (cmd.args.includes('logs')) return { stdout: 'one\ntwo\n', stderr: 'err\n' };
      return basics(cmd);
    });
    const handle = { driver: 'podman', workloadId: 'wl-1', displayId: ID.slice(0, 12), state: { containerId: ID, containerName: 'corral-wl-1' } };
    expect(await driver.readLogs(handle, { tailBytes: 4 })).toEqual({ data: Buffer.from('err\n'), truncated: true });
    expect(executor.calls.at(-1)?.args).toEqual(['logs', '--tail', '4', '--', ID]);
    expect(await driver.readLogs(handle, { tailBytes: 100 })).toEqual({ data: Buffer.from('one\ntwo\nerr\n'), truncated: false });
  });

  it('refuses to import a tarball that does not exist', async () => {
    const { driver } = make(basics);
    await expect(driver.importImage('/nonexistent/rootfs.tar', 'localhost/x:1')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('treats a missing container as gone: destroy succeeds, recover says why not', async () => {
    const { driver } = make((cmd) => {
      if (cmd.args.includes('inspect')) return { exitCode: 125, stderr: `Error: no container with name or ID "${ID}" found: no such container` };
      return basics(cmd);
    });
    const handle = { driver: 'podman', workloadId: 'wl-1', displayId: ID.slice(0, 12), state: { containerId: ID, containerName: 'corral-wl-1' } };
    await expect(driver.destroy(handle, { force: true })).resolves.toBeUndefined();
    await expect(driver.recover(handle)).resolves.toEqual({ recovered: false, reason: `container ${ID.slice(0, 12)} no longer exists` });
    await expect(driver.inspect(handle)).resolves.toEqual({ running: false, exit: undefined });
    await expect(driver.inspectContainer(handle)).rejects.toBeInstanceOf(NotFoundError);
    await expect(driver.wait(handle)).rejects.toThrow('recover it first');
  });
});
