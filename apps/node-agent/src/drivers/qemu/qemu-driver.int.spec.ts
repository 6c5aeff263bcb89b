import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { isProcessAlive, killProcessGroup, resolveProgram } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { ensureMicrovmImage, eventually, freePort, microvmImageUnavailableReason, qemuProcessesUnder, type MicrovmImage } from '@corral/testing';
import type { TaskHandle, TaskSpec } from '../driver';
import { hasExec, hasFiles, hasPause, hasSnapshot, type SnapshotProgress } from '../driver';
import { QemuDriver, UNKNOWN_EXIT_DETAIL } from './qemu-driver';

// The qemu driver with real qemu under tcg and the microVM test image: one
// VM for boot, exec and files through the guest agent, pause/resume,
// recovery by a new driver instance, snapshot and powerdown; one more qemu
// restored from the snapshot. The machine has 2 cores, so boots are kept to
// those two.

const qemuPath = resolveProgram('qemu-system-x86_64', process.env.PATH);
const skipReason = !qemuPath ? 'qemu-system-x86_64 is not installed' : microvmImageUnavailableReason();
if (skipReason) console.log(`[skip] qemu driver (real qemu): ${skipReason}`);
const describeWithQemu = skipReason ? describe.skip : describe;
// The image carries qemu-ga only when the host has it (ensureMicrovmImage rebuilds once it is installed).
const agentSkipReason = resolveProgram('qemu-ga', `${process.env.PATH}:/usr/sbin:/sbin`) ? undefined : 'qemu-ga is not installed (Debian: qemu-guest-agent)';
if (!skipReason && agentSkipReason) console.log(`[skip] qemu driver guest agent tests: ${agentSkipReason}`);
const itWithAgent = agentSkipReason ? it.skip : it;

async function* chunksOf(...parts: Array<string | Buffer>): AsyncIterable<Buffer> {
  for (const part of parts) yield Buffer.from(part);
}

async function readAll(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const chunk of chunks) out.push(chunk);
  return Buffer.concat(out);
}

/** GET / on 127.0.0.1:port; rejects on error or after timeoutMs. */
function httpGet(port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** Polls until the page is served; returns ms from `since`. */
async function servedAfter(port: number, pageText: string, since: number): Promise<number> {
  await eventually(async () => ((await httpGet(port, 2000)).includes(pageText) ? true : undefined), { timeoutMs: 60_000, intervalMs: 50, what: `HTTP on port ${port}` });
  return Date.now() - since;
}

describeWithQemu('qemu driver (real qemu, tcg)', () => {
  jest.setTimeout(180_000);
  let stateDir: string;
  let image: MicrovmImage;
  let driver: QemuDriver;
  let handle: TaskHandle;
  let hostPort: number;
  const pids: number[] = [];
  const timings: Record<string, number> = {};

  const newDriver = () =>
    new QemuDriver({ accelerator: 'auto', stateDir, defaultMemoryMb: 256, defaultVcpus: 1, logger: silentLogger, adoptedPollMs: 100, guestAgentTimeoutMs: 3000 });

  const vmSpec = (workloadId: string, port: number): TaskSpec => ({
    workloadId,
    name: workloadId,
    command: [],
    env: { SECRET: 'not-for-the-guest' },
    labels: {},
    vm: { mode: 'microvm', kernel: image.kernel, initrd: image.initrd, kernelArgs: image.kernelArgs },
    resources: { memoryMb: 256, vcpus: 1 },
    ports: [{ name: 'http', guestPort: image.guestHttpPort, hostPort: port, protocol: 'tcp' }],
  });

  beforeAll(async () => {
    // Short: the QMP socket path must fit in 107 bytes.
    stateDir = mkdtempSync('/tmp/cq-');
    image = await ensureMicrovmImage();
    driver = newDriver();
  });

  afterAll(async () => {
    // Nothing started here may outlive the tests.
    for (const pid of [...pids, ...qemuProcessesUnder(stateDir)]) {
      if (isProcessAlive(pid)) killProcessGroup(pid, 'SIGKILL');
    }
    await eventually(() => (qemuProcessesUnder(stateDir).length === 0 ? true : undefined), { timeoutMs: 10_000, what: 'no qemu left' });
    rmSync(stateDir, { recursive: true, force: true });
    console.log(`qemu driver timings (ms): ${JSON.stringify(timings)}`);
  });

  it('reports qemu and the accelerator it will use: tcg for auto, without hanging', async () => {
    const started = Date.now();
    const fp = await driver.fingerprint();
    expect(fp).toMatchObject({ name: 'qemu', healthy: true, version: expect.stringMatching(/^\d+\.\d+/) });
    expect(fp.detail).toMatch(/VMs run under tcg/);
    expect((await driver.accelerator()).accelerator).toBe('tcg');
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(hasPause(driver) && hasSnapshot(driver)).toBe(true);
  });

  it('boots a microVM that serves HTTP on the forwarded host port', async () => {
    hostPort = await freePort();
    const started = Date.now();
    handle = await driver.start(vmSpec('vm-main', hostPort));
    pids.push(Number(handle.displayId));
    timings.startReturned = Date.now() - started;
    expect(handle).toMatchObject({ driver: 'qemu', workloadId: 'vm-main', displayId: expect.stringMatching(/^\d+$/) });
    timings.bootToHttp = await servedAfter(hostPort, image.pageText, started);

    // qemu itself was started, with argv (no shell), under tcg; the workload's env went nowhere.
    const pid = Number(handle.displayId);
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv[0]).toBe(qemuPath);
    expect(argv).toEqual(expect.arrayContaining(['-accel', 'tcg', '-m', '256', '-smp', '1']));
    expect(readFileSync(`/proc/${pid}/environ`, 'utf8')).not.toContain('not-for-the-guest');
    expect(readFileSync(join(stateDir, 'vm-main', 'qemu.pid'), 'utf8').trim()).toBe(String(pid));

    const logs = await driver.readLogs(handle, { tailBytes: 64 * 1024 });
    expect(logs.data.toString()).toContain(image.readyMarker);
    const tail = await driver.readLogs(handle, { tailBytes: 10 });
    expect(tail).toMatchObject({ truncated: true });
    expect(tail.data.length).toBe(10);
    expect(await driver.inspect(handle)).toEqual({ running: true });
  });

  itWithAgent('runs commands in the guest through qemu-ga: output, stdin, exit codes', async () => {
    expect(image.guestAgent).toMatchObject({ port: 'org.qemu.guest_agent.0' });
    expect(hasExec(driver) && hasFiles(driver)).toBe(true);
    // qemu-ga starts once init has run the boot script: keep asking until it answers.
    const started = Date.now();
    const first = await eventually(() => driver.exec(handle, ['echo', 'hello', 'from the guest'], { timeoutMs: 10_000 }).catch(() => undefined), {
      timeoutMs: 90_000,
      intervalMs: 200,
      what: 'the guest agent',
    });
    timings.agentUp = Date.now() - started;
    expect(first).toEqual({ exitCode: 0, stdout: 'hello from the guest\n', stderr: '' });
    expect(await driver.exec(handle, ['cat'], { stdin: 'piped in\n', timeoutMs: 10_000 })).toEqual({ exitCode: 0, stdout: 'piped in\n', stderr: '' });
    expect(await driver.exec(handle, ['sh', '-c', 'echo to-stderr >&2; exit 7'], { timeoutMs: 10_000 })).toEqual({ exitCode: 7, stdout: '', stderr: 'to-stderr\n' });
    expect(await driver.exec(handle, ['no-such-program'], { timeoutMs: 10_000 })).toMatchObject({ exitCode: 127 });
    // The guest's own view: this is the VM, not the host.
    expect((await driver.exec(handle, ['cat', '/proc/cmdline'], { timeoutMs: 10_000 })).stdout).toContain(image.kernelArgs);
    const t = Date.now();
    await driver.exec(handle, ['true'], { timeoutMs: 10_000 });
    timings.execTrue = Date.now() - t;
    await expect(driver.exec(handle, ['sleep', '30'], { timeoutMs: 500 })).rejects.toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    // The timed-out command was killed: nothing named sleep is left running.
    expect((await driver.exec(handle, ['ps'], { timeoutMs: 10_000 })).stdout).not.toMatch(/sleep 30/);
  });

  itWithAgent('writes, reads back and lists files in the guest, atomically, refusing .. and oversized content', async () => {
    await driver.exec(handle, ['mkdir', '-p', '/srv/data'], { timeoutMs: 10_000 });
    let t = Date.now();
    expect(await driver.writeFile(handle, '/srv/data/hello.txt', chunksOf('hello ', 'guest\n'), { maxBytes: 1024, mode: 0o640 })).toEqual({ bytes: 12 });
    timings.writeSmall = Date.now() - t;
    expect((await readAll(await driver.readFile(handle, '/srv/data/hello.txt'))).toString()).toBe('hello guest\n');
    // Seen from inside: the content and the mode.
    expect((await driver.exec(handle, ['stat', '-c', '%a %s', '/srv/data/hello.txt'], { timeoutMs: 10_000 })).stdout).toBe('640 12\n');

    // Larger than one chunk both ways, binary-safe.
    const big = Buffer.alloc(1024 * 1024 + 333);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 9)) & 0xff;
    t = Date.now();
    await driver.writeFile(handle, '/srv/data/big.bin', chunksOf(big.subarray(0, 100_000), big.subarray(100_000)), { maxBytes: 4 * 1024 * 1024 });
    timings.write1MiB = Date.now() - t;
    t = Date.now();
    expect((await readAll(await driver.readFile(handle, '/srv/data/big.bin'))).equals(big)).toBe(true);
    timings.read1MiB = Date.now() - t;

    // Too big: refused, and the old content stays, with no temp file left.
    await expect(driver.writeFile(handle, '/srv/data/hello.txt', chunksOf('x'.repeat(600), 'y'.repeat(600)), { maxBytes: 1000 })).rejects.toMatchObject({ code: 'RESOURCE_EXHAUSTED' });
    expect((await readAll(await driver.readFile(handle, '/srv/data/hello.txt'))).toString()).toBe('hello guest\n');

    const entries = await driver.listDirectory(handle, '/srv/data');
    expect(entries.map((e) => e.name)).toEqual(['big.bin', 'hello.txt']);
    expect(entries[1]).toMatchObject({ name: 'hello.txt', kind: 'file', sizeBytes: 12, mode: 0o640, modifiedAt: expect.any(Date) });
    expect((await driver.listDirectory(handle, '/')).find((e) => e.name === 'init')).toMatchObject({ kind: 'symlink' });
    expect((await driver.listDirectory(handle, '/srv')).find((e) => e.name === 'data')).toMatchObject({ kind: 'directory' });

    await expect(driver.readFile(handle, '/srv/data/../../etc/inittab')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'path' });
    await expect(driver.listDirectory(handle, '/srv/..')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'path' });
    await expect(driver.writeFile(handle, 'srv/x', chunksOf('x'), { maxBytes: 10 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'path' });
    await expect(driver.readFile(handle, '/srv/data/missing')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(driver.listDirectory(handle, '/srv/nothing')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(driver.readFile(handle, '/srv/data')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('pauses (HTTP stops answering, QMP says paused) and resumes', async () => {
    let t = Date.now();
    await driver.pause(handle);
    timings.pause = Date.now() - t;
    expect(await driver.vmStatus(handle)).toBe('paused');
    await expect(httpGet(hostPort, 1000)).rejects.toThrow();
    if (!agentSkipReason) {
      // A guest that cannot answer (here: frozen) makes exec fail, bounded by guestAgentTimeoutMs, instead of hanging.
      await expect(driver.exec(handle, ['true'], { timeoutMs: 60_000 })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('guest agent') });
    }
    expect(await driver.inspect(handle)).toEqual({ running: true });
    t = Date.now();
    await driver.resume(handle);
    timings.resume = Date.now() - t;
    expect(await driver.vmStatus(handle)).toBe('running');
    expect(await httpGet(hostPort, 10_000)).toContain(image.pageText);
    // Resuming a running VM is a no-op.
    await driver.resume(handle);
    // The answer the frozen guest owed is skipped by the next session's resync.
    if (!agentSkipReason) expect(await driver.exec(handle, ['echo', 'thawed'], { timeoutMs: 10_000 })).toMatchObject({ exitCode: 0, stdout: 'thawed\n' });
  });

  it('snapshots to a file with progress, then keeps running', async () => {
    const file = join(stateDir, 'snapshots', 'vm-main.mem');
    const progress: SnapshotProgress[] = [];
    const result = await driver.snapshot(handle, file, (p) => progress.push(p));
    timings.snapshot = result.durationMs;
    timings.snapshotMb = Math.round(result.bytes / 1e6);
    expect(result).toMatchObject({ file, bytes: expect.any(Number) });
    expect(existsSync(file)).toBe(true);
    expect(existsSync(`${file}.partial`)).toBe(false);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(`${file}.json`).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(`${file}.json`, 'utf8'))).toMatchObject({ format: 'corral-qemu-snapshot/1', machine: { accelerator: 'tcg', memoryMb: 256 } });
    expect(progress.length).toBeGreaterThan(0);
    const last = progress.at(-1) as SnapshotProgress;
    expect(last.status).toBe('completed');
    // Guest RAM plus ROMs and other device memory.
    expect(last.totalBytes).toBeGreaterThanOrEqual(256 * 1024 * 1024);
    expect(last.transferredBytes).toBeGreaterThan(0);
    expect(last.remainingBytes).toBe(0);
    expect(await driver.vmStatus(handle)).toBe('running');
    expect(await httpGet(hostPort, 10_000)).toContain(image.pageText);
  });

  it('restores the snapshot in a new qemu, which serves HTTP again (faster than a boot)', async () => {
    const file = join(stateDir, 'snapshots', 'vm-main.mem');
    const port = await freePort();
    const started = Date.now();
    const restored = await driver.restoreFrom(file, vmSpec('vm-restored', port));
    pids.push(Number(restored.displayId));
    timings.restoreReturned = Date.now() - started;
    timings.restoreToHttp = await servedAfter(port, image.pageText, started);
    expect(await driver.vmStatus(restored)).toBe('running');
    expect(restored.displayId).not.toBe(handle.displayId);
    if (!agentSkipReason) {
      // The restored guest's agent answers on the new VM's own socket, with the snapshot's files.
      const cat = await eventually(() => driver.exec(restored, ['cat', '/srv/data/hello.txt'], { timeoutMs: 10_000 }).catch(() => undefined), { timeoutMs: 60_000, what: 'the restored agent' });
      expect(cat).toEqual({ exitCode: 0, stdout: 'hello guest\n', stderr: '' });
    }

    // Stop with a tiny grace period: powerdown is not done in time, so qemu is made to quit.
    const t = Date.now();
    await driver.stop(restored, { signal: 'SIGTERM', timeoutMs: 100 });
    timings.stopAfterTimeout = Date.now() - t;
    expect(await driver.inspect(restored)).toMatchObject({ running: false });
    expect(isProcessAlive(Number(restored.displayId))).toBe(false);
    await driver.destroy(restored, { force: false });
    expect(existsSync(join(stateDir, 'vm-restored'))).toBe(false);
  });

  it('is recovered by a new driver instance (an agent restart), which can stop it with a powerdown', async () => {
    const second = newDriver();
    await expect(second.pause(handle)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(await second.recover(handle)).toEqual({ recovered: true });
    expect(await second.inspect(handle)).toEqual({ running: true });
    expect(await second.vmStatus(handle)).toBe('running');
    if (!agentSkipReason) {
      // The agent socket is in the handle: exec works again on the re-adopted VM.
      expect(await second.exec(handle, ['cat', '/srv/data/hello.txt'], { timeoutMs: 10_000 })).toMatchObject({ exitCode: 0, stdout: 'hello guest\n' });
      expect((await second.listDirectory(handle, '/srv/data')).map((e) => e.name)).toEqual(['big.bin', 'hello.txt']);
    }

    const t = Date.now();
    await second.stop(handle, { signal: 'SIGTERM', timeoutMs: 60_000 });
    timings.powerdown = Date.now() - t;
    // The original driver is qemu's parent: it sees the clean exit; the new one cannot know the code.
    expect(await driver.wait(handle)).toEqual({ exitCode: 0 });
    expect(await second.wait(handle)).toEqual({ exitCode: undefined, detail: UNKNOWN_EXIT_DETAIL });
    expect((await second.readLogs(handle, { tailBytes: 64 * 1024 })).data.toString()).toContain(image.readyMarker.replace('ready', 'powerdown'));
    expect(await second.recover(handle)).toEqual({ recovered: true });
    expect(await newDriver().recover(handle)).toMatchObject({ recovered: false, reason: expect.stringContaining('gone') });

    await second.destroy(handle, { force: true });
    expect(existsSync(join(stateDir, 'vm-main'))).toBe(false);
    // Idempotent.
    await second.destroy(handle, { force: true });
    await expect(second.vmStatus(handle)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('fails a start cleanly when qemu cannot boot what it is given', async () => {
    const spec = vmSpec('vm-bad', await freePort());
    spec.vm = { mode: 'microvm', kernel: join(stateDir, 'no-such-kernel') };
    await expect(driver.start(spec)).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('qemu exited during start') });
    expect(existsSync(join(stateDir, 'vm-bad'))).toBe(false);
    await expect(driver.restoreFrom(join(stateDir, 'nothing.mem'), vmSpec('vm-bad2', 1))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(qemuProcessesUnder(stateDir)).toEqual([]);
  });
});
