import { realpathSync } from 'node:fs';
import { createExecutor, execErrorFromResult, type Command, type Executor } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import { BUSYBOX_INDEX_HTML, DEFAULT_BUSYBOX_PATH, describeWithPodman, ensureBusyboxImage } from './busybox-image';

// The test image with real podman: imported once, then reused.

describeWithPodman('busybox test image (real podman)', () => {
  const REF = 'localhost/corral-busybox:int-spec';
  const podman = createExecutor({ allowedPrograms: ['podman'], logger: silentLogger });
  const cmd = (args: string[]): Command<string> => ({ program: 'podman', args, timeoutMs: 60_000, parse: (out) => out, mapError: (r) => execErrorFromResult(r) });

  afterAll(async () => {
    await podman.run(cmd(['rmi', '--force', '--', REF])).catch(() => undefined);
  });

  it('imports the image once and serves the page from it', async () => {
    await podman.run(cmd(['rmi', '--force', '--', REF])).catch(() => undefined);
    const imports: string[][] = [];
    const counting: Executor = {
      programs: podman.programs,
      resolve: (p) => podman.resolve(p),
      run: (c, o) => {
        if (c.args.includes('import')) imports.push([...c.args]);
        return podman.run(c, o);
      },
    };
    expect(await ensureBusyboxImage(REF, { executor: counting })).toBe(REF);
    expect(imports).toHaveLength(1);

    // A second ensure in this process is memoised...
    await ensureBusyboxImage(REF, { executor: counting });
    expect(imports).toHaveLength(1);
    // ...and one that is not (another path to the same busybox, as in a new
    // test run) finds the image labelled with the same rootfs hash.
    const samebusybox = realpathSync(DEFAULT_BUSYBOX_PATH);
    if (samebusybox !== DEFAULT_BUSYBOX_PATH) {
      await ensureBusyboxImage(REF, { executor: counting, busyboxPath: samebusybox });
      expect(imports).toHaveLength(1);
    }

    const runtime = ['--runtime', 'runc', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'];
    const page = await podman.run(cmd(['run', '--rm', '--pull', 'never', ...runtime, REF, 'cat', '/www/index.html']));
    expect(page).toBe(BUSYBOX_INDEX_HTML);
  });
});
