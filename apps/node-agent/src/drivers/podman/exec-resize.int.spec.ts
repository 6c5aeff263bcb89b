import { createExecutor, execErrorFromResult, type Command } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { describeWithPodman, ensureBusyboxImage, eventually } from '@corral/testing';
import type { TaskHandle } from '../driver';
import { parsePs, WORKLOAD_ID_LABEL } from './commands';
import { PodmanDriver } from './podman-driver';

// `podman exec --tty` sessions resized while they run, against real podman
// and the busybox test image: the command inside sees each new size (stty
// size) after the session's resize, which goes through conmon.

describeWithPodman('podman exec terminal resize (real podman)', () => {
  const run = `pr${process.pid.toString(36)}${Date.now().toString(36)}`;
  const podman = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
  const raw = (args: string[]): Command<string> => ({ program: 'podman', args, timeoutMs: 60_000, parse: (out) => out, mapError: (r) => execErrorFromResult(r) });
  const driver = new PodmanDriver({ logger: silentLogger, exitPollMs: 200 });
  let handle: TaskHandle;

  beforeAll(async () => {
    const image = await ensureBusyboxImage();
    handle = await driver.start({ workloadId: `${run}-box`, name: 'box', image, command: ['sleep', '600'], env: {}, labels: { 'corral.test-run': run } });
  }, 180_000);

  afterAll(async () => {
    await driver.close();
    const ours = parsePs(await podman.run(raw(['ps', '--all', '--filter', `label=${WORKLOAD_ID_LABEL}`, '--format', 'json']))).filter((c) => c.workloadId?.startsWith(run));
    for (const c of ours) await podman.run(raw(['rm', '--force', '--time', '0', '--', c.id])).catch(() => undefined);
  }, 120_000);

  it('offers resize on a tty session only, and the command sees every new size', async () => {
    const plain = await driver.execSession(handle, ['true'], { tty: false });
    expect(plain.resize).toBeUndefined();
    await plain.exited;

    // Prints the terminal's size for every line it reads; "q" ends it.
    const session = await driver.execSession(handle, ['sh', '-c', 'while read line; do [ "$line" = q ] && exit 0; stty size; done'], { tty: true });
    let output = '';
    session.onStdout((d) => (output += d.toString()));
    expect(typeof session.resize).toBe('function');

    for (const [columns, rows] of [
      [100, 30],
      [132, 43],
      [80, 24],
    ]) {
      session.resize?.(columns, rows);
      await eventually(
        () => {
          session.writeStdin(Buffer.from('\n'));
          return output.includes(`${rows} ${columns}\r\n`) ? true : undefined;
        },
        { timeoutMs: 20_000, intervalMs: 200, what: `stty size to say ${rows} ${columns} (output so far: ${JSON.stringify(output.slice(-200))})` },
      );
    }
    // A size the terminal cannot take is ignored, not fatal to the session.
    session.resize?.(0, 0);
    session.writeStdin(Buffer.from('q\n'));
    await expect(session.exited).resolves.toBe(0);
  });
});
