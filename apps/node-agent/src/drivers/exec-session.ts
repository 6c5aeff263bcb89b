import { constants as osConstants } from 'node:os';
import type { InteractiveProcess } from '@corral/exec';
import type { ExecSession } from './driver';

// An interactive exec session over a local program with piped stdio (the
// podman client, a host process): output is read from the start and held
// until a listener is registered, so a slow consumer never loses the first
// bytes and an unread stream never stalls the program's exit.

class Channel {
  private readonly listeners: ((data: Buffer) => void)[] = [];
  private queued: Buffer[] = [];

  push(data: Buffer): void {
    if (this.listeners.length === 0) this.queued.push(data);
    else for (const listener of this.listeners) listener(data);
  }

  on(listener: (data: Buffer) => void): void {
    this.listeners.push(listener);
    const queued = this.queued;
    this.queued = [];
    for (const data of queued) listener(data);
  }
}

export function sessionOverProcess(
  child: InteractiveProcess,
  options: {
    resize?: (columns: number, rows: number) => void;
    /** Also ends what the local program started elsewhere (a command inside a container). */
    onKill?: () => void;
  } = {},
): ExecSession {
  const stdout = new Channel();
  const stderr = new Channel();
  child.stdout.on('data', (data: Buffer) => stdout.push(data));
  child.stderr.on('data', (data: Buffer) => stderr.push(data));
  const exited = child.exited.then(({ exitCode, signal }) => exitCode ?? signalExitCode(signal));
  return {
    writeStdin: (data) => {
      if (!child.stdin.writableEnded) child.stdin.write(data);
    },
    closeStdin: () => {
      if (!child.stdin.writableEnded) child.stdin.end();
    },
    ...(options.resize ? { resize: options.resize } : {}),
    onStdout: (listener) => stdout.on(listener),
    onStderr: (listener) => stderr.on(listener),
    exited,
    kill: () => {
      options.onKill?.();
      child.kill('SIGKILL');
    },
  };
}

/** A signal death as a shell reports it: 128 + signal number (137 for SIGKILL). */
export function signalExitCode(signal: NodeJS.Signals | null): number {
  const number = signal ? osConstants.signals[signal] : undefined;
  return number === undefined ? 255 : 128 + number;
}
