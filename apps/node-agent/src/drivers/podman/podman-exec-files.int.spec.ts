import { createExecutor, execErrorFromResult, type Command } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { describeWithPodman, ensureBusyboxImage } from '@corral/testing';
import { InvalidArgumentError, NotFoundError, ResourceExhaustedError } from '@corral/domain';
import type { ExecSession, TaskHandle } from '../driver';
import { parsePs, WORKLOAD_ID_LABEL } from './commands';
import { PodmanDriver } from './podman-driver';

// Interactive exec and files of the podman driver against real podman and
// the busybox test image. Every container is labelled with this run's id
// and removed afterwards.

async function* chunks(...parts: (string | Buffer)[]): AsyncGenerator<Buffer> {
  for (const part of parts) yield Buffer.from(part);
}

async function readAll(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of source) parts.push(part);
  return Buffer.concat(parts);
}

/** Runs a session to its end, collecting both outputs. */
async function finish(session: ExecSession): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  session.onStdout((d) => out.push(d));
  session.onStderr((d) => err.push(d));
  const exitCode = await session.exited;
  return { exitCode, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

describeWithPodman('podman driver exec sessions and files (real podman)', () => {
  const run = `px${process.pid.toString(36)}${Date.now().toString(36)}`;
  const podman = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
  const raw = (args: string[]): Command<string> => ({ program: 'podman', args, timeoutMs: 60_000, parse: (out) => out, mapError: (r) => execErrorFromResult(r) });
  const driver = new PodmanDriver({ logger: silentLogger, exitPollMs: 200 });
  let handle: TaskHandle;

  beforeAll(async () => {
    const image = await ensureBusyboxImage();
    handle = await driver.start({
      workloadId: `${run}-box`,
      name: 'box',
      image,
      command: ['sleep', '600'],
      env: { GREETING: 'hello from the workload' },
      labels: { 'corral.test-run': run },
    });
  }, 180_000);

  afterAll(async () => {
    await driver.close();
    const ours = parsePs(await podman.run(raw(['ps', '--all', '--filter', `label=${WORKLOAD_ID_LABEL}`, '--format', 'json']))).filter((c) =>
      c.workloadId?.startsWith(run),
    );
    for (const c of ours) await podman.run(raw(['rm', '--force', '--time', '0', '--', c.id])).catch(() => undefined);
  }, 120_000);

  describe('execSession', () => {
    it('streams stdout and stderr separately and reports the exit code', async () => {
      const session = await driver.execSession(handle, ['sh', '-c', 'echo out; echo err >&2; exit 7'], { tty: false });
      session.closeStdin();
      await expect(finish(session)).resolves.toEqual({ exitCode: 7, stdout: 'out\n', stderr: 'err\n' });
    });

    it('passes stdin through until it is closed', async () => {
      const session = await driver.execSession(handle, ['cat'], { tty: false });
      session.writeStdin(Buffer.from('first line\n'));
      session.writeStdin(Buffer.from('second line\n'));
      session.closeStdin();
      await expect(finish(session)).resolves.toMatchObject({ exitCode: 0, stdout: 'first line\nsecond line\n' });
    });

    it('runs with extra env (values never in argv) and a working directory', async () => {
      const session = await driver.execSession(handle, ['sh', '-c', 'echo "$GREETING|$EXTRA|$PATH"; pwd'], {
        tty: false,
        env: { EXTRA: 'only for this exec', PATH: '/bin' },
        workingDir: '/www',
      });
      session.closeStdin();
      await expect(finish(session)).resolves.toMatchObject({ exitCode: 0, stdout: 'hello from the workload|only for this exec|/bin\n/www\n' });
    });

    it('gives the command a terminal with tty', async () => {
      const session = await driver.execSession(handle, ['sh', '-c', 'test -t 0 && test -t 1 && echo is-a-tty; exit 3'], { tty: true });
      session.closeStdin();
      const result = await finish(session);
      expect(result.exitCode).toBe(3);
      expect(result.stdout).toContain('is-a-tty');
      expect(result.stderr).toBe('');
    });

    it('ends the command inside the container when the session is killed', async () => {
      const session = await driver.execSession(handle, ['sleep', '321'], { tty: false });
      // Running inside before it is killed.
      const running = async () => (await driver.exec(handle, ['ps'], { timeoutMs: 30_000 })).stdout.includes('sleep 321');
      for (let i = 0; i < 100 && !(await running()); i++) await new Promise((r) => setTimeout(r, 50));
      expect(await running()).toBe(true);
      session.kill();
      await expect(session.exited).resolves.toBeGreaterThan(128);
      for (let i = 0; i < 100 && (await running()); i++) await new Promise((r) => setTimeout(r, 50));
      expect(await running()).toBe(false);
    });

    it('still runs buffered execs', async () => {
      await expect(driver.exec(handle, ['sh', '-c', 'cat; exit 2'], { stdin: 'buffered', timeoutMs: 30_000 })).resolves.toEqual({
        exitCode: 2,
        stdout: 'buffered',
        stderr: '',
      });
    });
  });

  describe('files', () => {
    it('writes a file atomically with its mode, reads it back and lists it', async () => {
      const body = Buffer.alloc(300_000, 'x');
      await expect(driver.writeFile(handle, '/tmp/upload.bin', chunks(body.subarray(0, 100_000), body.subarray(100_000)), { maxBytes: 1_000_000, mode: 0o640 })).resolves.toEqual({
        bytes: 300_000,
      });
      expect((await readAll(await driver.readFile(handle, '/tmp/upload.bin'))).equals(body)).toBe(true);
      const entries = await driver.listDirectory(handle, '/tmp');
      expect(entries).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'upload.bin', kind: 'file', sizeBytes: 300_000, mode: 0o640 })]));
      // No temporary upload file is left behind.
      expect(entries.filter((e) => e.name.startsWith('.corral-upload-'))).toEqual([]);
    });

    it('replaces an existing file with a new inode (rename), not in place', async () => {
      await driver.writeFile(handle, '/tmp/replace.txt', chunks('old'), { maxBytes: 100 });
      const before = await driver.exec(handle, ['ls', '-i', '/tmp/replace.txt'], { timeoutMs: 30_000 });
      await driver.writeFile(handle, '/tmp/replace.txt', chunks('new content'), { maxBytes: 100 });
      const after = await driver.exec(handle, ['ls', '-i', '/tmp/replace.txt'], { timeoutMs: 30_000 });
      expect(after.stdout.trim().split(/\s+/)[0]).not.toBe(before.stdout.trim().split(/\s+/)[0]);
      expect((await readAll(await driver.readFile(handle, '/tmp/replace.txt'))).toString()).toBe('new content');
    });

    it('refuses an oversized upload and leaves the old content and nothing else behind', async () => {
      await driver.writeFile(handle, '/tmp/limited.txt', chunks('keep me'), { maxBytes: 100 });
      await expect(driver.writeFile(handle, '/tmp/limited.txt', chunks('a'.repeat(60), 'b'.repeat(60)), { maxBytes: 100 })).rejects.toBeInstanceOf(ResourceExhaustedError);
      expect((await readAll(await driver.readFile(handle, '/tmp/limited.txt'))).toString()).toBe('keep me');
      const names = (await driver.listDirectory(handle, '/tmp')).map((e) => e.name);
      expect(names.filter((n) => n.startsWith('.corral-upload-'))).toEqual([]);
    });

    it('lists directories with kinds, and follows a symlinked directory', async () => {
      await driver.exec(handle, ['sh', '-c', 'mkdir -p /tmp/tree/sub && echo hi > /tmp/tree/a && ln -sf a /tmp/tree/link && ln -sfn /tmp/tree /tmp/treelink'], { timeoutMs: 30_000 });
      const entries = await driver.listDirectory(handle, '/tmp/tree');
      expect(entries.map((e) => [e.name, e.kind]).sort()).toEqual([
        ['a', 'file'],
        ['link', 'symlink'],
        ['sub', 'directory'],
      ]);
      expect((await driver.listDirectory(handle, '/tmp/treelink')).map((e) => e.name).sort()).toEqual(['a', 'link', 'sub']);
    });

    it('refuses `..` and relative paths before touching the container', async () => {
      await expect(driver.readFile(handle, '/tmp/../etc/passwd')).rejects.toBeInstanceOf(InvalidArgumentError);
      await expect(driver.writeFile(handle, 'tmp/x', chunks('x'), { maxBytes: 10 })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'path' });
      await expect(driver.listDirectory(handle, '/..')).rejects.toBeInstanceOf(InvalidArgumentError);
    });

    it('resolves symlinks inside the container: a link aiming at the host root reads the container\'s files', async () => {
      await driver.exec(handle, ['sh', '-c', 'echo container-secret > /tmp/mine; ln -sfn ../../../../../../ /tmp/escape'], { timeoutMs: 30_000 });
      // Through the link, /etc/hostname is the container's (its id), never the host's.
      const viaLink = (await readAll(await driver.readFile(handle, '/tmp/escape/etc/hostname'))).toString().trim();
      const direct = (await readAll(await driver.readFile(handle, '/etc/hostname'))).toString().trim();
      expect(viaLink).toBe(direct);
      expect((await readAll(await driver.readFile(handle, '/tmp/escape/tmp/mine'))).toString()).toBe('container-secret\n');
    });

    it('says what is missing or wrong', async () => {
      await expect(driver.readFile(handle, '/no/such/file')).rejects.toBeInstanceOf(NotFoundError);
      await expect(driver.readFile(handle, '/tmp')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'path' });
      await expect(driver.listDirectory(handle, '/etc/hostname')).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'path' });
      await expect(driver.listDirectory(handle, '/no/such/dir')).rejects.toBeInstanceOf(NotFoundError);
      await expect(driver.writeFile(handle, '/no/such/dir/file', chunks('x'), { maxBytes: 10 })).rejects.toBeInstanceOf(NotFoundError);
      await driver.exec(handle, ['mkdir', '-p', '/tmp/a-dir'], { timeoutMs: 30_000 });
      await expect(driver.writeFile(handle, '/tmp/a-dir', chunks('x'), { maxBytes: 10 })).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'path' });
      expect((await driver.listDirectory(handle, '/tmp')).filter((e) => e.name.startsWith('.corral-upload-'))).toEqual([]);
    });

    it('is a NotFound on a container that is gone', async () => {
      const gone: TaskHandle = { ...handle, workloadId: `${run}-gone`, state: { containerId: 'f'.repeat(64), containerName: 'corral-gone' } };
      await expect(driver.listDirectory(gone, '/')).rejects.toBeInstanceOf(NotFoundError);
      await expect(driver.readFile(gone, '/etc/hostname')).rejects.toBeInstanceOf(NotFoundError);
    });
  });
});
