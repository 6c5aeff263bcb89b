import { constants as osConstants } from 'node:os';
import type { InteractiveProcess } from '@corral/exec';
import type { ExecSession } from './driver';

// An interactive exec session over a local program with piped stdio (the
// podman client, a host process): output is read from the start and held
// until a listener is registered, so a slow consumer never loses the first
// bytes. While the consumer is behind, `pauseOutput` stops reading the pipes:
// the program then blocks in write(2) (the pipe buffer is all that is held)
// instead of its output piling up in the agent. Ending the session reads the
// pipes to their end again, so a killed program's exit is always seen. Input
// the program does not read is held back the same way: `writeStdin` returns
// a promise while its stdin is full.

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
      if (child.stdin.writableEnded || child.stdin.destroyed || child.stdin.write(data)) return;
      // Full: the caller sends no more until the command has read some (or its stdin is gone).
      return new Promise<void>((resolve) => {
        const room = () => {
          child.stdin.removeListener('drain', room);
          child.stdin.removeListener('close', room);
          resolve();
        };
        child.stdin.once('drain', room);
        child.stdin.once('close', room);
      });
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
      // Paused pipes would never reach their end, and 'close' (so `exited`) waits for it.
      child.stdout.resume();
      child.stderr.resume();
    },
    pauseOutput: () => {
      child.stdout.pause();
      child.stderr.pause();
    },
    resumeOutput: () => {
      child.stdout.resume();
      child.stderr.resume();
    },
  };
}

/** A signal death as a shell reports it: 128 + signal number (137 for SIGKILL). */
export function signalExitCode(signal: NodeJS.Signals | null): number {
  const number = signal ? osConstants.signals[signal] : undefined;
  return number === undefined ? 255 : 128 + number;
}
