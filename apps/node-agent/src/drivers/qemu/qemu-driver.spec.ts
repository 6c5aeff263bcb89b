import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isProcessAlive, killProcessGroup } from '@corral/exec';
import { silentLogger } from '@corral/logging';
import type { TaskHandle, TaskSpec } from '../driver';
import { QemuDriver, parseQemuVersion } from './qemu-driver';

// The driver's lifecycle against a fake qemu: a small node program that
// takes qemu's argv, writes the pid file and console log, and serves QMP on
// the socket it is given. What it does on powerdown, quit and SIGTERM
// depends on the VM's -name, so every escalation step of stop can be seen
// without booting anything. It also serves the guest agent's chardev
// socket: a VM named agent-* answers like qemu-ga (guest-exec echoes its
// argv), any other accepts connections and never answers, like a guest
// without an agent.

const FAKE_QEMU = `#!${process.execPath}
const net = require('net');
const fs = require('fs');
const argv = process.argv.slice(2);
if (argv[0] === '--version') { console.log('QEMU emulator version 9.9.9 (fake)'); process.exit(0); }
const opt = (flag) => { const i = argv.indexOf(flag); return i >= 0 ? argv[i + 1] : undefined; };
const name = opt('-name');
fs.writeFileSync(opt('-pidfile'), process.pid + '\\n');
fs.appendFileSync(opt('-serial').replace(/^file:/, ''), 'fake guest booting\\nargv ' + JSON.stringify(argv) + '\\n');
if (name.startsWith('crash')) { console.error('qemu-system-x86_64: could not load kernel'); process.exit(1); }
const stubborn = name.startsWith('stubborn');
if (stubborn) process.on('SIGTERM', () => {});
let status = opt('-incoming') ? 'paused' : 'running';
const socketPath = opt('-qmp').replace(/^unix:/, '').split(',')[0];
net.createServer((s) => {
  const send = (m) => s.write(JSON.stringify(m) + '\\r\\n');
  send({ QMP: { version: { qemu: { major: 9, minor: 9, micro: 9 } }, capabilities: [] } });
  let buf = '';
  s.on('error', () => {});
  s.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) {
      const m = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1);
      fs.appendFileSync(opt('-serial').replace(/^file:/, ''), 'qmp ' + m.execute + '\\n');
      const ok = (r) => send({ return: r === undefined ? {} : r, id: m.id });
      switch (m.execute) {
        case 'query-status': ok({ status, running: status === 'running' }); break;
        case 'stop': status = 'paused'; send({ event: 'STOP' }); ok(); break;
        case 'cont': status = 'running'; send({ event: 'RESUME' }); ok(); break;
        case 'system_powerdown': ok(); if (!stubborn && !name.startsWith('slow')) setTimeout(() => process.exit(0), 50); break;
        case 'quit': if (!stubborn) { ok(); process.exit(0); } break;
        default: ok();
      }
    }
  });
}).listen(socketPath);
const chardev = opt('-chardev');
// Like qemu-ga's, the command table outlives any one connection.
const procs = new Map();
if (chardev) net.createServer((s) => {
  s.on('error', () => {});
  if (!name.startsWith('agent')) return;
  let buf = Buffer.alloc(0);
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const ff = buf.indexOf(0xff), nl = buf.indexOf(10);
      if (ff >= 0 && (nl < 0 || ff < nl)) { buf = buf.subarray(ff + 1); continue; }
      if (nl < 0) return;
      const m = JSON.parse(buf.subarray(0, nl).toString()); buf = buf.subarray(nl + 1);
      const ok = (r) => s.write(JSON.stringify({ return: r, id: m.id }) + '\\n');
      if (m.execute === 'guest-sync-delimited') { s.write(Buffer.from([0xff])); s.write(JSON.stringify({ return: m.arguments.id }) + '\\n'); }
      else if (m.execute === 'guest-exec') { procs.set(procs.size + 1, [m.arguments.path, ...m.arguments.arg].join(' ')); ok({ pid: procs.size }); }
      else if (m.execute === 'guest-exec-status') ok({ exited: true, exitcode: 3, 'out-data': Buffer.from(procs.get(m.arguments.pid) + '\\n').toString('base64') });
      else s.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: 'no ' + m.execute }, id: m.id }) + '\\n');
    }
  });
}).listen(/path=([^,]+)/.exec(chardev)[1]);
setInterval(() => {}, 1000);
`;

describe('qemu driver (fake qemu)', () => {
  let dir: string;
  let stateDir: string;
  let fakeQemu: string;
  const handles: TaskHandle[] = [];

  const newDriver = (extra: Partial<ConstructorParameters<typeof QemuDriver>[0]> = {}) =>
    new QemuDriver({ accelerator: 'tcg', stateDir, qemuBinary: fakeQemu, defaultMemoryMb: 128, defaultVcpus: 1, logger: silentLogger, quitWaitMs: 300, killWaitMs: 3000, adoptedPollMs: 50, ...extra });

  const spec = (workloadId: string): TaskSpec => ({
    workloadId,
    name: workloadId,
    command: [],
    env: {},
    labels: {},
    vm: { mode: 'microvm', kernel: '/boot/vmlinuz-fake' },
    ports: [{ name: 'http', guestPort: 80, hostPort: 40080, protocol: 'tcp' }],
  });

  const start = async (driver: QemuDriver, workloadId: string) => {
    const handle = await driver.start(spec(workloadId));
    handles.push(handle);
    return handle;
  };
  const qmpLog = (workloadId: string) =>
    readFileSync(join(stateDir, workloadId, 'console.log'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('qmp '))
      .map((l) => l.slice(4))
      .filter((c) => c !== 'qmp_capabilities' && c !== 'query-status');

  beforeAll(() => {
    dir = mkdtempSync('/tmp/cqf-');
    fakeQemu = join(dir, 'qemu-system-x86_64');
    writeFileSync(fakeQemu, FAKE_QEMU);
    chmodSync(fakeQemu, 0o755);
  });

  beforeEach(() => {
    stateDir = mkdtempSync(join(dir, 's-'));
  });

  afterEach(() => {
    for (const h of handles.splice(0)) {
      const pid = Number(h.displayId);
      if (isProcessAlive(pid)) killProcessGroup(pid, 'SIGKILL');
    }
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('fingerprints the qemu version and the accelerator', async () => {
    expect(await newDriver().fingerprint()).toMatchObject({ name: 'qemu', healthy: true, version: '9.9.9', detail: expect.stringContaining('VMs run under tcg') });
    expect(await newDriver({ qemuBinary: join(dir, 'missing') }).fingerprint()).toMatchObject({ healthy: false, detail: expect.stringContaining('not installed') });
    expect(parseQemuVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n')).toBe('7.2.22');
  });

  it('refuses to run VMs when kvm is demanded but /dev/kvm cannot be opened', async () => {
    const driver = newDriver({ accelerator: 'kvm', kvmDevice: join(dir, 'no-kvm') });
    expect(await driver.fingerprint()).toMatchObject({ healthy: false, detail: expect.stringContaining('cannot be opened') });
    await expect(driver.start(spec('vm-kvm'))).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('starts once QMP answers, and a powerdown ends a guest that obeys it', async () => {
    const driver = newDriver();
    const handle = await start(driver, 'obedient');
    expect(handle.state).toMatchObject({ pid: Number(handle.displayId), dir: join(stateDir, 'obedient'), machine: { accelerator: 'tcg', memoryMb: 128, vcpus: 1 } });
    expect(await driver.inspect(handle)).toEqual({ running: true });
    await driver.stop(handle, { signal: 'SIGTERM', timeoutMs: 5000 });
    expect(await driver.wait(handle)).toEqual({ exitCode: 0 });
    expect(qmpLog('obedient')).toEqual(['system_powerdown']);
  });

  it('quits qemu over QMP when the guest ignores the powerdown', async () => {
    const driver = newDriver();
    const handle = await start(driver, 'slow');
    await driver.stop(handle, { signal: 'SIGTERM', timeoutMs: 100 });
    expect(await driver.wait(handle)).toEqual({ exitCode: 0 });
    expect(qmpLog('slow')).toEqual(['system_powerdown', 'quit']);
  });

  it('kills the process group when neither powerdown, quit nor SIGTERM work', async () => {
    const driver = newDriver();
    const handle = await start(driver, 'stubborn');
    await driver.stop(handle, { signal: 'SIGTERM', timeoutMs: 100 });
    expect(await driver.wait(handle)).toEqual({ exitCode: undefined, signal: 'SIGKILL' });
    expect(qmpLog('stubborn')).toEqual(['system_powerdown', 'quit']);
  });

  it('quits a paused VM at once: it could not act on a powerdown', async () => {
    const driver = newDriver();
    const handle = await start(driver, 'paused');
    await driver.pause(handle);
    expect(await driver.vmStatus(handle)).toBe('paused');
    const t = Date.now();
    await driver.stop(handle, { signal: 'SIGTERM', timeoutMs: 10_000 });
    expect(Date.now() - t).toBeLessThan(5000);
    expect(qmpLog('paused')).toEqual(['stop', 'quit']);
  });

  it('SIGKILL skips the polite steps', async () => {
    const driver = newDriver();
    const handle = await start(driver, 'killme');
    await driver.stop(handle, { signal: 'SIGKILL', timeoutMs: 10_000 });
    expect(await driver.wait(handle)).toMatchObject({ signal: 'SIGKILL' });
    expect(qmpLog('killme')).toEqual([]);
  });

  it('pauses and resumes over QMP, one session at a time', async () => {
    const driver = newDriver();
    const handle = await start(driver, 'pausing');
    await Promise.all([driver.pause(handle), driver.vmStatus(handle), driver.resume(handle), driver.pause(handle), driver.resume(handle)]);
    expect(await driver.vmStatus(handle)).toBe('running');
    expect(qmpLog('pausing')).toEqual(['stop', 'cont', 'stop', 'cont']);
  });

  it('boots a unikernel image through an overlay of its own, leaving the image untouched', async () => {
    const image = join(dir, 'unikernel.img');
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    const driver = newDriver();
    const handle = await driver.start({ ...spec('uni'), vm: undefined, image });
    handles.push(handle);
    const argvLine = readFileSync(join(stateDir, 'uni', 'console.log'), 'utf8').split('\n').find((l) => l.startsWith('argv ')) as string;
    const argv = JSON.parse(argvLine.slice(5)) as string[];
    const overlay = join(stateDir, 'uni', 'disk0.qcow2');
    expect(argv[argv.indexOf('-drive') + 1]).toBe(`file=${overlay},format=qcow2,if=virtio,discard=unmap`);
    expect(argv).not.toContain('-kernel');
    expect(readFileSync(overlay).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
    expect(handle.state).toMatchObject({ machine: { boot: { mode: 'unikernel' }, disks: [{ path: overlay, format: 'qcow2', owned: true }] } });
    await driver.destroy(handle, { force: true });
    expect(existsSync(image)).toBe(true);
  });

  it('reports a qemu that exits at start, and leaves nothing behind', async () => {
    const driver = newDriver();
    const err = await driver.start(spec('crash')).catch((e) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('exit code 1') });
    expect((err.cause as Error).message).toContain('could not load kernel');
    expect(existsSync(join(stateDir, 'crash'))).toBe(false);
  });

  it('refuses a second VM with the same id while the first runs, and destroys only when told to force', async () => {
    const driver = newDriver();
    const handle = await start(driver, 'twice');
    await expect(driver.start(spec('twice'))).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    // Another driver instance (say, after an agent restart, before recovery) sees the live pid file.
    await expect(newDriver().start(spec('twice'))).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    await expect(driver.destroy(handle, { force: false })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await driver.destroy(handle, { force: true });
    expect(isProcessAlive(Number(handle.displayId))).toBe(false);
    expect(existsSync(join(stateDir, 'twice'))).toBe(false);
  });

  it('recovers a live VM in a new driver instance and notices when it exits', async () => {
    const first = newDriver();
    const handle = await start(first, 'adopted');
    const second = newDriver();
    await expect(second.wait(handle)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(await second.recover(handle)).toEqual({ recovered: true });
    await second.stop(handle, { signal: 'SIGTERM', timeoutMs: 5000 });
    expect(await second.wait(handle)).toMatchObject({ exitCode: undefined, detail: expect.stringContaining('re-adopted') });
    expect(await first.wait(handle)).toEqual({ exitCode: 0 });
    // A recovered handle whose pid now belongs to another process is not adopted.
    expect(await newDriver().recover({ ...handle, state: { ...handle.state, pid: process.pid, startTime: '1' } })).toMatchObject({ recovered: false });
  });

  it('runs commands through the guest agent on qga.sock, also after recovery by a new driver instance', async () => {
    const first = newDriver();
    const handle = await start(first, 'agent-vm');
    const argvLine = readFileSync(join(stateDir, 'agent-vm', 'console.log'), 'utf8').split('\n').find((l) => l.startsWith('argv ')) as string;
    const argv = JSON.parse(argvLine.slice(5)) as string[];
    expect(argv).toEqual(expect.arrayContaining(['-chardev', `socket,id=qga0,path=${join(stateDir, 'agent-vm', 'qga.sock')},server=on,wait=off`]));
    expect(handle.state).toMatchObject({ qgaSocket: join(stateDir, 'agent-vm', 'qga.sock'), machine: { guestAgent: true } });
    expect(await first.exec(handle, ['echo', 'a b'], { timeoutMs: 5000 })).toEqual({ exitCode: 3, stdout: 'echo a b\n', stderr: '' });

    const second = newDriver();
    await expect(second.exec(handle, ['echo'], { timeoutMs: 5000 })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(await second.recover(handle)).toEqual({ recovered: true });
    expect(await second.exec(handle, ['echo', 'again'], { timeoutMs: 5000 })).toMatchObject({ stdout: 'echo again\n' });
    await expect(second.exec(handle, [], { timeoutMs: 5000 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'argv' });
    await expect(second.readFile(handle, 'relative')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'path' });
  });

  it('fails exec and files with FailedPrecondition, not a hang, when the guest runs no agent', async () => {
    const driver = newDriver({ guestAgentTimeoutMs: 200 });
    const handle = await start(driver, 'mute-vm');
    for (const call of [
      () => driver.exec(handle, ['true'], { timeoutMs: 60_000 }),
      () => driver.readFile(handle, '/etc/hostname'),
      () => driver.listDirectory(handle, '/'),
      () => driver.writeFile(handle, '/tmp/x', (async function* () {
        yield Buffer.from('x');
      })(), { maxBytes: 10 }),
    ]) {
      await expect(call()).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('guest agent of VM mute-vm is unavailable') });
    }
    // A handle of a VM started before the agent port existed.
    const { qgaSocket: _dropped, ...older } = handle.state;
    await expect(driver.exec({ ...handle, state: older }, ['true'], { timeoutMs: 1000 })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('without a guest agent port') });
    // And with the port switched off in the config, qemu gets no such device.
    const plain = await start(newDriver({ guestAgent: false }), 'plain-vm');
    expect(plain.state).not.toHaveProperty('machine.guestAgent');
    expect(readFileSync(join(stateDir, 'plain-vm', 'console.log'), 'utf8')).not.toContain('virtserialport');
  });

  it('rejects handles and ids it cannot use', async () => {
    const driver = newDriver();
    await expect(driver.start(spec('../escape'))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(driver.inspect({ driver: 'qemu', workloadId: 'x', displayId: '1', state: {} })).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(() => newDriver({ stateDir: 'relative' })).toThrow(/absolute/);
    const longDir = mkdtempSync(join(dir, 'x'.repeat(90)));
    await expect(newDriver({ stateDir: longDir }).start(spec('long-enough-to-overflow'))).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('107 bytes') });
  });
});
