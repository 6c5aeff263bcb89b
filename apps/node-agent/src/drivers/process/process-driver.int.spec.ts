import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Topic } from '@corral/events';
import { isProcessAlive, killProcessGroup } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { eventually } from '@corral/testing';
import { DriverRegistry } from '../driver-registry';
import { WorkloadSupervisor } from '../../workloads/workload-supervisor';
import type { WorkloadSpecInput } from '../../workloads/spec-validation';
import { ProcessDriver, UNKNOWN_EXIT_DETAIL } from './process-driver';

// The process driver with real processes, through the supervisor, including
// an agent restart (a new supervisor and driver over the same state dir).

describe('process driver (real processes)', () => {
  let stateDir: string;
  let supervisor: WorkloadSupervisor;
  const published: Array<{ key: string; state: string; seq: number }> = [];
  const pids: number[] = [];

  const bus = {
    publish<T>(_topic: Topic<T>, key: string, message: T) {
      const m = message as unknown as { state: string; seq: number };
      published.push({ key, state: m.state, seq: m.seq });
    },
  };

  const newSupervisor = async () => {
    const drivers = new DriverRegistry(silentLogger).register(new ProcessDriver({ rootDir: join(stateDir, 'process'), logger: silentLogger, adoptedPollMs: 50 }));
    const s = new WorkloadSupervisor({ hostId: 'host-int', stateDir, drivers, bus, logger: silentLogger });
    await s.recover();
    return s;
  };

  const sh = (workloadId: string, script: string, extra: Partial<WorkloadSpecInput> = {}): WorkloadSpecInput => ({
    workloadId,
    name: workloadId,
    driver: 'process',
    command: ['/bin/sh', '-c', script],
    env: {},
    labels: {},
    ...extra,
  });

  const start = async (input: WorkloadSpecInput) => {
    const view = await supervisor.start(input);
    if (view.handle) pids.push(Number(view.handle));
    return view;
  };

  const finished = (id: string) =>
    eventually(() => (['stopped', 'failed'].includes(supervisor.inspect(id).state) ? supervisor.inspect(id) : undefined), { timeoutMs: 10_000, what: `${id} to finish` });

  beforeEach(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-process-driver-'));
    published.length = 0;
    supervisor = await newSupervisor();
  });

  afterEach(async () => {
    await supervisor.close();
    // Nothing started here may outlive the test.
    for (const pid of pids.splice(0)) killProcessGroup(pid, 'SIGKILL');
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('runs a command, captures its output, and stops it', async () => {
    const view = await start(sh('hello', 'echo hello; sleep 30'));
    expect(view).toMatchObject({ state: 'running', handle: expect.stringMatching(/^\d+$/) });
    expect(isProcessAlive(Number(view.handle))).toBe(true);
    await eventually(async () => ((await supervisor.readLogs('hello')).data.toString().includes('hello') ? true : undefined), { what: 'hello in the logs' });
    const logFile = join(stateDir, 'process', 'hello', 'output.log');
    expect(statSync(logFile).mode & 0o777).toBe(0o600);

    const stopped = await supervisor.stop('hello', { timeoutMs: 5000, signal: 'SIGTERM' });
    expect(stopped).toMatchObject({ state: 'stopped', exited: true });
    expect(isProcessAlive(Number(view.handle))).toBe(false);
    expect(published.filter((p) => p.key === 'hello').map((p) => p.state)).toEqual([
      'INSTANCE_STATE_PROVISIONING',
      'INSTANCE_STATE_RUNNING',
      'INSTANCE_STATE_STOPPING',
      'INSTANCE_STATE_STOPPED',
    ]);
  });

  it('a process that exits 3 is failed with exit code 3; exit 0 is stopped', async () => {
    await start(sh('three', 'exit 3'));
    await start(sh('zero', 'echo fine'));
    expect(await finished('three')).toMatchObject({ state: 'failed', exitCode: 3 });
    expect(await finished('zero')).toMatchObject({ state: 'stopped', exitCode: 0 });
  });

  it('gives the workload only its own env (plus a default PATH) and a private working directory', async () => {
    process.env.CORRAL_AGENT_SECRET_FOR_TEST = 'agent-secret';
    try {
      await start(sh('env', 'echo "cwd=$(pwd) secret=[$CORRAL_AGENT_SECRET_FOR_TEST] mine=$MINE path=$PATH"', { env: { MINE: 'x' } }));
    } finally {
      delete process.env.CORRAL_AGENT_SECRET_FOR_TEST;
    }
    await finished('env');
    const out = (await supervisor.readLogs('env')).data.toString().trim();
    expect(out).toBe(`cwd=${join(stateDir, 'process', 'env', 'work')} secret=[] mine=x path=/usr/local/bin:/usr/bin:/bin`);
  });

  it('kills a process that ignores the stop signal after the timeout', async () => {
    await start(sh('stubborn', "trap '' TERM; echo ready; while :; do sleep 1; done"));
    await eventually(async () => ((await supervisor.readLogs('stubborn')).data.toString().includes('ready') ? true : undefined));
    const started = Date.now();
    const stopped = await supervisor.stop('stubborn', { timeoutMs: 300, signal: 'SIGTERM' });
    expect(stopped).toMatchObject({ state: 'stopped', exitCode: 128 + 9 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it('a command that does not exist fails to start with the reason', async () => {
    const view = await supervisor.start({ ...sh('nope', ''), command: ['/nonexistent/program'] });
    expect(view).toMatchObject({ state: 'failed', exited: false });
    expect(view.reason).toContain('cannot run "/nonexistent/program"');
  });

  it('after an agent restart: re-adopts the live process (same pid), reports the dead one lost', async () => {
    const live = await start(sh('survivor', 'echo up; sleep 30'));
    const doomed = await start(sh('doomed', 'sleep 30'));
    await supervisor.close();

    // While no agent runs, one workload dies.
    killProcessGroup(Number(doomed.handle), 'SIGKILL');
    await eventually(() => (isProcessAlive(Number(doomed.handle)) ? undefined : true), { what: 'doomed to die' });

    supervisor = await newSupervisor();
    expect(supervisor.inspect('survivor')).toMatchObject({ state: 'running', handle: live.handle, seq: 2 });
    expect(isProcessAlive(Number(live.handle))).toBe(true);
    expect(supervisor.inspect('doomed')).toMatchObject({ state: 'failed', reason: 'lost', exited: true, seq: 3 });
    expect(published.at(-1)).toEqual({ key: 'doomed', state: 'INSTANCE_STATE_FAILED', seq: 3 });

    // The re-adopted process is controlled as before: logs, stop.
    expect((await supervisor.readLogs('survivor')).data.toString()).toContain('up');
    const stopped = await supervisor.stop('survivor', { timeoutMs: 5000 });
    expect(stopped).toMatchObject({ state: 'stopped', seq: 4, exited: true, exitCode: undefined });
    expect(isProcessAlive(Number(live.handle))).toBe(false);
  });

  it('a re-adopted process that exits by itself is recorded with an unknown exit code', async () => {
    const marker = join(stateDir, 'go');
    await start(sh('adopted', `while [ ! -e ${marker} ]; do sleep 0.05; done; exit 0`));
    await supervisor.close();
    supervisor = await newSupervisor();
    expect(supervisor.inspect('adopted').state).toBe('running');
    writeFileSync(marker, '');
    const done = await finished('adopted');
    expect(done).toMatchObject({ state: 'failed', exited: true, exitCode: undefined, reason: UNKNOWN_EXIT_DETAIL });
  });

  it('destroy removes the workload directory and refuses a live task unless forced', async () => {
    const driver = new ProcessDriver({ rootDir: join(stateDir, 'direct'), logger: silentLogger });
    const handle = await driver.start({ workloadId: 'direct', name: 'direct', command: ['sleep', '30'], env: {}, labels: {} });
    pids.push(Number(handle.displayId));
    expect(await driver.inspect(handle)).toEqual({ running: true });
    await expect(driver.destroy(handle, { force: false })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await driver.destroy(handle, { force: true });
    expect(existsSync(join(stateDir, 'direct', 'direct'))).toBe(false);
    expect(isProcessAlive(Number(handle.displayId))).toBe(false);
    expect(await driver.recover(handle)).toMatchObject({ recovered: false });
  });

  describe('routes and pause', () => {
    const procState = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[0];
    const httpServer = (workloadId: string) => ({
      ...sh(workloadId, ''),
      // The agent passes only the workload's env and a minimal PATH: node by its absolute path.
      command: [process.execPath, '-e', "require('http').createServer((q,s)=>s.end('hello '+process.env.PORT_HTTP)).listen(process.env.PORT)"],
      routes: [{ name: 'http', port: 8080 }],
    });
    const get = (port: number, timeoutMs = 5000) => fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(timeoutMs) }).then((r) => r.text());

    it('listens on its host port (no network namespace), freezes on pause and answers again on resume', async () => {
      const view = await start(httpServer('web'));
      expect(view.ports).toEqual([{ name: 'http', guestPort: 8080, hostPort: expect.any(Number), protocol: 'tcp' }]);
      const hostPort = view.ports[0].hostPort;
      expect(await eventually(() => get(hostPort).catch(() => undefined), { what: 'the server to answer' })).toBe(`hello ${hostPort}`);

      const paused = await supervisor.pause('web');
      expect(paused.state).toBe('paused');
      expect(procState(Number(view.handle))).toBe('T');
      // A state, not a speed: a frozen process accepts nothing within a second.
      await expect(get(hostPort, 1000)).rejects.toThrow();

      expect((await supervisor.resume('web')).state).toBe('running');
      expect(procState(Number(view.handle))).not.toBe('T');
      expect(await get(hostPort)).toBe(`hello ${hostPort}`);

      const stopped = await supervisor.stop('web', { timeoutMs: 5000 });
      expect(stopped).toMatchObject({ state: 'stopped', ports: [] });
      const table = JSON.parse(readFileSync(join(stateDir, 'ports.json'), 'utf8'));
      expect(table.workloads).toEqual({});
    });

    it('a paused workload is thawed to handle its stop signal within the grace period', async () => {
      const view = await start(sh('frozen', "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done"));
      await eventually(async () => ((await supervisor.readLogs('frozen')).data.toString().includes('ready') ? true : undefined));
      await supervisor.pause('frozen');
      expect(procState(Number(view.handle))).toBe('T');
      const stopped = await supervisor.stop('frozen', { timeoutMs: 5000 });
      expect(stopped).toMatchObject({ state: 'stopped', exitCode: 0 });
      expect((await supervisor.readLogs('frozen')).data.toString()).toContain('bye');
    });

    it('pauses a re-adopted process too', async () => {
      const view = await start(sh('adopted-pause', 'sleep 30'));
      await supervisor.close();
      supervisor = await newSupervisor();
      await supervisor.pause('adopted-pause');
      expect(procState(Number(view.handle))).toBe('T');
      await supervisor.resume('adopted-pause');
      expect(procState(Number(view.handle))).not.toBe('T');
    });
  });
});
