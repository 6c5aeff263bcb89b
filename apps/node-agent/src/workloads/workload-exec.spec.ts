import type { Driver, ExecCapability, InteractiveExecCapability, TaskHandle } from '../drivers/driver';
import { bufferedSession, openExecSession } from './workload-exec';

const handle: TaskHandle = { driver: 'fake', workloadId: 'w1', displayId: 'w1', state: {} };
const limits = { bufferedStdinMaxBytes: 10, bufferedTimeoutMs: 1000 };

function driverWith(extra: Partial<ExecCapability & InteractiveExecCapability>): Driver {
  return { name: 'fake', ...extra } as unknown as Driver;
}

describe('openExecSession', () => {
  it('uses streaming exec when the driver has it', async () => {
    const execSession = jest.fn().mockResolvedValue({ marker: true });
    const session = await openExecSession(driverWith({ execSession, exec: jest.fn() }), handle, ['ls'], { tty: true }, limits);
    expect(session).toEqual({ marker: true });
    expect(execSession).toHaveBeenCalledWith(handle, ['ls'], { tty: true });
  });

  it('falls back to buffered exec: stdin held until EOF, output after the command ran', async () => {
    const exec = jest.fn().mockResolvedValue({ exitCode: 3, stdout: 'out', stderr: 'err' });
    const session = await openExecSession(driverWith({ exec }), handle, ['cat'], { tty: false }, limits);
    const out: string[] = [];
    const err: string[] = [];
    session.onStdout((d) => out.push(d.toString()));
    session.onStderr((d) => err.push(d.toString()));
    session.writeStdin(Buffer.from('abc'));
    session.writeStdin(Buffer.from('def'));
    expect(exec).not.toHaveBeenCalled();
    session.closeStdin();
    await expect(session.exited).resolves.toBe(3);
    expect(exec).toHaveBeenCalledWith(handle, ['cat'], { stdin: Buffer.from('abcdef'), timeoutMs: 1000 });
    expect([out, err]).toEqual([['out'], ['err']]);
  });

  it('refuses a TTY, working dirs and env through buffered exec, and drivers with no exec at all', async () => {
    const exec = jest.fn();
    await expect(openExecSession(driverWith({ exec }), handle, ['sh'], { tty: true }, limits)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
    await expect(openExecSession(driverWith({ exec }), handle, ['sh'], { tty: false, workingDir: '/x' }, limits)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
    await expect(openExecSession(driverWith({}), handle, ['sh'], { tty: false }, limits)).rejects.toMatchObject({ name: 'FailedPreconditionError' });
  });

  it('checks the command', async () => {
    const exec = jest.fn();
    await expect(openExecSession(driverWith({ exec }), handle, [], { tty: false }, limits)).rejects.toMatchObject({ name: 'InvalidArgumentError', field: 'command' });
    await expect(openExecSession(driverWith({ exec }), handle, ['a\0b'], { tty: false }, limits)).rejects.toMatchObject({ field: 'command' });
  });
});

describe('bufferedSession', () => {
  it('fails with ResourceExhausted once stdin passes the limit, and never runs the command', async () => {
    const run = jest.fn();
    const session = bufferedSession(run, { bufferedStdinMaxBytes: 4 });
    session.writeStdin(Buffer.from('12345'));
    session.closeStdin();
    await expect(session.exited).rejects.toMatchObject({ name: 'ResourceExhaustedError', field: 'stdin' });
    expect(run).not.toHaveBeenCalled();
  });

  it('ends when killed, dropping output that arrives later', async () => {
    let finish: (v: { exitCode: number; stdout: string; stderr: string }) => void = () => undefined;
    const session = bufferedSession(() => new Promise((r) => (finish = r)), { bufferedStdinMaxBytes: 4 });
    const out: Buffer[] = [];
    session.onStdout((d) => out.push(d));
    session.closeStdin();
    session.kill();
    finish({ exitCode: 0, stdout: 'late', stderr: '' });
    await expect(session.exited).rejects.toMatchObject({ name: 'DeadlineExceededError' });
    expect(out).toEqual([]);
  });
});
