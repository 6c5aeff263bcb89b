import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FailedPreconditionError } from '@corral/domain';
import { createExecutor, execErrorFromResult, type Command } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { BUSYBOX_INDEX_HTML, buildBusyboxRootfsTar, describeWithPodman, ensureBusyboxImage, eventually, freePort } from '@corral/testing';
import type { TaskHandle, TaskSpec } from '../driver';
import { parsePs, WORKLOAD_ID_LABEL } from './commands';
import { PodmanDriver, type ImportProgress } from './podman-driver';

// The podman driver against real podman (DESIGN §4: runc, explicit ulimits,
// a busybox image imported from a tarball). Every container is labelled
// with an id of this run and removed in afterAll, whatever happened.

describeWithPodman('podman driver (real podman)', () => {
  const run = `pd${process.pid.toString(36)}${Date.now().toString(36)}`;
  const id = (name: string) => `${run}-${name}`;
  const IMPORTED = `localhost/corral-busybox:import-${run}`;
  const podman = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
  const raw = (args: string[]): Command<string> => ({ program: 'podman', args, timeoutMs: 60_000, parse: (out) => out, mapError: (r) => execErrorFromResult(r) });
  const drivers: PodmanDriver[] = [];
  let image: string;
  let driver: PodmanDriver;
  let tmp: string;

  const newDriver = () => {
    const d = new PodmanDriver({ logger: silentLogger, exitPollMs: 200, killWaitMs: 10_000 });
    drivers.push(d);
    return d;
  };

  const spec = (name: string, command: string[], extra: Partial<TaskSpec> = {}): TaskSpec => ({
    workloadId: id(name),
    name,
    image,
    command,
    env: {},
    labels: { 'corral.test-run': run },
    resources: { vcpus: 0.5, memoryMb: 64 },
    ...extra,
  });

  /** Our containers still on the host. */
  const leftovers = async () => parsePs(await podman.run(raw(['ps', '--all', '--filter', `label=${WORKLOAD_ID_LABEL}`, '--format', 'json']))).filter((c) => c.workloadId?.startsWith(run));

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'corral-podman-'));
    image = await ensureBusyboxImage();
    driver = newDriver();
  }, 120_000);

  afterAll(async () => {
    await Promise.all(drivers.map((d) => d.close()));
    for (const c of await leftovers()) await podman.run(raw(['rm', '--force', '--time', '0', '--', c.id])).catch(() => undefined);
    await podman.run(raw(['rmi', '--force', '--', IMPORTED])).catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
    expect(await leftovers()).toEqual([]);
  }, 120_000);

  it('fingerprints podman as healthy, with the runtime and ulimits it uses', async () => {
    const fp = await driver.fingerprint();
    expect(fp).toMatchObject({ name: 'podman', healthy: true, version: expect.stringMatching(/^\d+\.\d+/) });
    expect(fp.detail).toMatch(/runtime \S+/);
    expect(fp.detail).toMatch(/ulimits nofile=\d+:\d+ nproc=\d+:\d+/);
  });

  describe('a web server', () => {
    let web: TaskHandle;
    let port: number;
    const get = async () => (await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) })).text();

    beforeAll(async () => {
      port = await freePort();
      web = await driver.start(
        spec('web', ['httpd', '-f', '-p', '8080', '-h', '/www'], {
          env: { GREETING: 'hello from env', MULTI: 'two\nlines', EMPTY: '', PATH: '/bin' },
          ports: [{ name: 'http', guestPort: 8080, hostPort: port, protocol: 'tcp' }],
        }),
      );
    });

    it('serves HTTP on the published host port', async () => {
      expect(web.displayId).toMatch(/^[0-9a-f]{12}$/);
      expect(await eventually(() => get(), { timeoutMs: 10_000, what: 'the page' })).toBe(BUSYBOX_INDEX_HTML);
      expect(await driver.inspect(web)).toEqual({ running: true, paused: false });
    });

    it('passes the env into the container', async () => {
      expect(await driver.exec(web, ['sh', '-c', 'echo "$GREETING"; echo "$MULTI"; echo "[${EMPTY-unset}]"; echo "$PATH"'], { timeoutMs: 10_000 })).toEqual({
        exitCode: 0,
        stdout: 'hello from env\ntwo\nlines\n[]\n/bin\n',
        stderr: '',
      });
    });

    it('gives up on an exec that outlasts its timeout', async () => {
      await expect(driver.exec(web, ['sleep', '5'], { timeoutMs: 300 })).rejects.toMatchObject({ name: 'DeadlineExceededError' });
    });

    it('execs with stdin and reports the exit code of the command', async () => {
      expect(await driver.exec(web, ['cat'], { stdin: 'piped in', timeoutMs: 10_000 })).toMatchObject({ exitCode: 0, stdout: 'piped in' });
      expect(await driver.exec(web, ['sh', '-c', 'echo oops >&2; exit 4'], { timeoutMs: 10_000 })).toEqual({ exitCode: 4, stdout: '', stderr: 'oops\n' });
    });

    it('pauses and resumes', async () => {
      await driver.pause(web);
      expect(await driver.inspect(web)).toEqual({ running: true, paused: true });
      expect((await driver.inspectContainer(web)).status).toBe('paused');
      await expect(driver.exec(web, ['true'], { timeoutMs: 10_000 })).rejects.toBeInstanceOf(FailedPreconditionError);
      await driver.resume(web);
      expect(await driver.inspect(web)).toEqual({ running: true, paused: false });
      expect(await get()).toBe(BUSYBOX_INDEX_HTML);
    });

    it('refuses to destroy a running container without force', async () => {
      await expect(driver.destroy(web, { force: false })).rejects.toBeInstanceOf(FailedPreconditionError);
    });

    it('is recovered by a new driver instance (agent restart), which can then stop it', async () => {
      const restarted = newDriver();
      expect(await restarted.recover(web)).toEqual({ recovered: true });
      expect(await restarted.inspect(web)).toEqual({ running: true, paused: false });
      const exited = restarted.wait(web);
      // busybox httpd as pid 1 has no SIGTERM handler: the kill after the timeout ends it.
      await restarted.stop(web, { timeoutMs: 1000, signal: 'SIGTERM' });
      expect(await exited).toEqual({ exitCode: 137 });
      expect(await driver.wait(web)).toEqual({ exitCode: 137 });
      await restarted.destroy(web, { force: false });
      expect(await newDriver().recover(web)).toEqual({ recovered: false, reason: `container ${web.displayId} no longer exists` });
    });
  });

  it('stops with the requested signal, and within the timeout when the task obeys it', async () => {
    const task = await driver.start(spec('obeys', ['sh', '-c', 'trap "echo got-usr1; exit 0" USR1; echo ready; while :; do sleep 0.1; done']));
    await eventually(async () => ((await driver.readLogs(task, { tailBytes: 100 })).data.toString().includes('ready') ? true : undefined), { what: 'ready' });
    const started = Date.now();
    await driver.stop(task, { timeoutMs: 20_000, signal: 'SIGUSR1' });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await driver.wait(task)).toEqual({ exitCode: 0 });
    expect(await driver.inspect(task)).toEqual({ running: false, exit: { exitCode: 0 } });
    expect((await driver.readLogs(task, { tailBytes: 1000 })).data.toString()).toBe('ready\ngot-usr1\n');
    await driver.destroy(task, { force: false });
  });

  it('stops a paused task (thawing it first)', async () => {
    const task = await driver.start(spec('paused', ['sleep', '600']));
    await driver.pause(task);
    await driver.stop(task, { timeoutMs: 500, signal: 'SIGTERM' });
    expect(await driver.inspect(task)).toMatchObject({ running: false });
    await driver.destroy(task, { force: false });
  });

  it('reports the exit code of a task that ends by itself', async () => {
    const task = await driver.start(spec('exit3', ['sh', '-c', 'exit 3']));
    expect(await driver.wait(task)).toEqual({ exitCode: 3 });
    expect(await driver.inspect(task)).toEqual({ running: false, exit: { exitCode: 3 } });
    expect(await newDriver().recover(task)).toEqual({ recovered: true });
  });

  it('reads logs with stdout and stderr interleaved, and the tail only when asked', async () => {
    const task = await driver.start(spec('logs', ['sh', '-c', 'echo out-1; sleep 0.1; echo err-1 >&2; sleep 0.1; echo out-2; sleep 600']));
    const logs = await eventually(
      async () => {
        const chunk = await driver.readLogs(task, { tailBytes: 1000 });
        return chunk.data.toString().includes('out-2') ? chunk : undefined;
      },
      { what: 'all log lines' },
    );
    expect(logs).toEqual({ data: Buffer.from('out-1\nerr-1\nout-2\n'), truncated: false });
    expect(await driver.readLogs(task, { tailBytes: 6 })).toEqual({ data: Buffer.from('out-2\n'), truncated: true });
    const exited = driver.wait(task);
    await driver.destroy(task, { force: true });
    expect(await exited).toEqual({ exitCode: 137 });
  });

  it('destroys idempotently', async () => {
    const task = await driver.start(spec('destroy', ['sleep', '600']));
    await driver.destroy(task, { force: true });
    await driver.destroy(task, { force: true });
    await driver.destroy(task, { force: false });
    expect(await driver.inspect(task)).toMatchObject({ running: false });
    expect((await leftovers()).map((c) => c.workloadId)).not.toContain(task.workloadId);
  });

  it('leaves nothing behind when the start fails, and maps the failure', async () => {
    await expect(driver.start(spec('nocmd', ['no-such-command']))).rejects.toMatchObject({ name: 'FailedPreconditionError', field: 'spec.command[0]' });
    await expect(driver.start(spec('noimage', ['true'], { image: 'localhost/corral-no-such-image:1' }))).rejects.toMatchObject({
      name: 'FailedPreconditionError',
      field: 'spec.image',
    });
    const ids = (await leftovers()).map((c) => c.workloadId);
    expect(ids).not.toContain(id('nocmd'));
    expect(ids).not.toContain(id('noimage'));
  });

  it('lists the containers it labelled, for the reconciler', async () => {
    const task = await driver.start(spec('listed', ['sleep', '600']));
    const listed = (await driver.listCorralContainers()).find((c) => c.workloadId === task.workloadId);
    expect(listed).toMatchObject({ id: task.state.containerId, names: [`corral-${task.workloadId}`], state: 'running', labels: { 'corral.test-run': run } });
    await driver.destroy(task, { force: true });
  });

  it('imports a rootfs tarball with progress, and runs it', async () => {
    const tarPath = join(tmp, 'rootfs.tar');
    const tar = buildBusyboxRootfsTar();
    writeFileSync(tarPath, tar);
    const progress: ImportProgress[] = [];
    const imported = await driver.importImage(tarPath, IMPORTED, (p) => progress.push(p));
    expect(imported).toMatchObject({ imageId: expect.stringMatching(/^[0-9a-f]{64}$/), ref: IMPORTED, bytes: tar.length });
    const transferring = progress.filter((p) => p.phase === 'transferring');
    expect(transferring.length).toBeGreaterThan(0);
    expect(transferring.at(-1)).toEqual({ phase: 'transferring', bytesRead: tar.length, totalBytes: tar.length });
    expect(progress.map((p) => p.phase).slice(-2)).toEqual(['importing', 'done']);

    const task = await driver.start(spec('imported', ['cat', '/www/index.html'], { image: IMPORTED }));
    expect(await driver.wait(task)).toEqual({ exitCode: 0 });
    expect((await driver.readLogs(task, { tailBytes: 10_000 })).data.toString()).toBe(BUSYBOX_INDEX_HTML);
    await driver.destroy(task, { force: false });
  });
});
