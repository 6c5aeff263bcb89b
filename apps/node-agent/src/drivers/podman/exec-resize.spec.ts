import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findConmonSession, parseConmonCmdline, resizeMessage, writeResize } from './exec-resize';

// The pure parts of exec resizing, and the /proc walk over a fake /proc:
// which process is the session's, which conmon serves it, and what it is sent.

const CONTAINER = 'a'.repeat(64);
const OTHER = 'b'.repeat(64);
const conmonArgv = (container: string, bundle: string) =>
  ['/usr/bin/conmon', '--api-version', '1', '-c', container, '-u', 'c'.repeat(64), '-r', '/usr/bin/runc', '-b', bundle, '-t', '-i', '--exec-attach', ''].join('\0');

describe('exec resize through conmon', () => {
  let proc: string;
  beforeEach(() => {
    proc = mkdtempSync(join(tmpdir(), 'corral-fake-proc-'));
  });
  afterEach(() => rmSync(proc, { recursive: true, force: true }));

  const fakeProcess = (pid: number, parent: number, files: { environ?: string; cmdline?: string; comm?: string }) => {
    mkdirSync(join(proc, String(pid)));
    writeFileSync(join(proc, String(pid), 'environ'), files.environ ?? 'PATH=/bin\0');
    writeFileSync(join(proc, String(pid), 'cmdline'), files.cmdline ?? 'sh\0');
    writeFileSync(join(proc, String(pid), 'stat'), `${pid} (${files.comm ?? 'sh'}) S ${parent} ${pid} ${pid} 0 -1`);
  };

  it('reads the container and bundle from conmon argv, and nothing from anything else', () => {
    expect(parseConmonCmdline(conmonArgv(CONTAINER, '/var/lib/containers/x/userdata/s'))).toEqual({ containerId: CONTAINER, bundle: '/var/lib/containers/x/userdata/s' });
    expect(parseConmonCmdline(['/usr/bin/sleep', '-c', CONTAINER, '-b', '/x'].join('\0'))).toBeUndefined();
    expect(parseConmonCmdline(conmonArgv(CONTAINER, 'relative/dir'))).toBeUndefined();
    expect(parseConmonCmdline(conmonArgv(CONTAINER, '/var/../etc'))).toBeUndefined();
    expect(parseConmonCmdline(conmonArgv('not-an-id', '/x'))).toBeUndefined();
  });

  it('asks for rows then columns, and refuses sizes a terminal cannot take', () => {
    expect(resizeMessage(132, 43)).toBe('1 43 132\n');
    expect(() => resizeMessage(0, 24)).toThrow(RangeError);
    expect(() => resizeMessage(80, 70_000)).toThrow(RangeError);
    expect(() => resizeMessage(80.5, 24)).toThrow(RangeError);
  });

  it('finds the marked command whose parent is the conmon of our container', async () => {
    const marker = 'f'.repeat(32);
    fakeProcess(10, 1, { cmdline: conmonArgv(OTHER, '/bundles/other'), comm: 'conmon' });
    fakeProcess(11, 10, { environ: `A=1\0CORRAL_EXEC_ID=${marker}\0` }); // another container's conmon: not ours
    fakeProcess(20, 1, { cmdline: conmonArgv(CONTAINER, '/bundles/ours'), comm: 'conmon' });
    fakeProcess(21, 20, { environ: `CORRAL_EXEC_ID=${marker}\0HOME=/`, comm: 'sh (x)' });
    fakeProcess(22, 21, { environ: `CORRAL_EXEC_ID=${marker}\0` }); // a child of the command: its parent is no conmon
    fakeProcess(30, 20, { environ: `CORRAL_EXEC_ID=${'e'.repeat(32)}\0` });
    expect(await findConmonSession(marker, CONTAINER.slice(0, 12), proc)).toEqual({ containerId: CONTAINER, bundle: '/bundles/ours' });
    expect(await findConmonSession('d'.repeat(32), CONTAINER, proc)).toBeUndefined();
  });

  it('writes only to a FIFO', async () => {
    const bundle = join(proc, 'bundle');
    mkdirSync(bundle);
    writeFileSync(join(bundle, 'ctl'), '');
    await expect(writeResize(bundle, 80, 24)).rejects.toThrow(/not conmon's control FIFO/);
  });
});
