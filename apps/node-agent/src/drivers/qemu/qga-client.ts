import { createConnection, type Socket } from 'node:net';
import { randomInt } from 'node:crypto';

// A small client for the QEMU guest agent (qemu-ga) protocol, spoken over
// the unix socket qemu serves for the VM's virtio-serial port: JSON
// commands in, one JSON answer per line out, in order, no greeting and no
// events; an `id` sent with a command comes back in its answer. Unlike QMP
// the byte stream outlives any one connection (it is a serial line into the
// guest), so it may hold the answer to an earlier client's command, or half
// a command another client left behind. Every session therefore starts with
// a resync: a 0xFF byte (the agent's JSON parser drops what it held), then
// `guest-sync-delimited` with a random id, whose answer is preceded by a
// 0xFF byte of the agent's own; everything before that sentinel, and any
// stale sync answer, is discarded. After that, answers are matched by id
// (unique to the session), so a late answer to a timed-out command is
// dropped rather than taken for another's. A guest without an agent simply
// never answers: every wait is bounded.

/** The agent answered a command with an error. */
export class QgaCommandError extends Error {
  override readonly name = 'QgaCommandError';
  constructor(
    readonly command: string,
    /** e.g. GenericError, CommandNotFound, InvalidParameter. */
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`guest agent ${command} failed: ${errorClass}: ${desc}`);
  }
}

/** The socket could not be reached, closed, or the agent did not answer in time. */
export class QgaConnectionError extends Error {
  override readonly name = 'QgaConnectionError';
  constructor(
    message: string,
    readonly reason: 'connect' | 'closed' | 'timeout' | 'protocol',
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface QgaConnectOptions {
  /** For connecting and the resync handshake: how long a silent agent is waited for. Default 5 s. */
  timeoutMs?: number;
  /** Default for each command's answer. Default 10 s. */
  commandTimeoutMs?: number;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

/** The byte qemu-ga puts before the answer to guest-sync-delimited (and reads as "reset"). */
const SENTINEL = 0xff;
/** An answer longer than this is not a guest agent's: the connection is dropped. */
const MAX_LINE_BYTES = 64 * 1024 * 1024;

export class QgaClient {
  private buffer: Buffer = Buffer.alloc(0);
  /** Set while resyncing: lines are not answers until the agent's sentinel and sync answer have been seen. */
  private sync?: { id: number; sentinelSeen: boolean; resolve(): void };
  private readonly pending = new Map<string, Pending>();
  /** Ids are unique to this session: nothing an earlier client asked can match them. */
  private readonly idPrefix = `c${randomInt(1, 2 ** 31).toString(36)}-`;
  private nextId = 1;
  private closedError?: QgaConnectionError;

  private constructor(
    private readonly socket: Socket,
    private readonly commandTimeoutMs: number,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new QgaConnectionError(`guest agent connection failed: ${err.message}`, 'closed', { cause: err })));
    socket.on('close', () => this.fail(new QgaConnectionError('guest agent connection closed', 'closed')));
  }

  /** Connects and resyncs the stream; rejects with a QgaConnectionError when the agent does not answer in time. */
  static connect(socketPath: string, options: QgaConnectOptions = {}): Promise<QgaClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    return new Promise<QgaClient>((resolve, reject) => {
      const socket = createConnection({ path: socketPath });
      const client = new QgaClient(socket, options.commandTimeoutMs ?? 10_000);
      const timer = setTimeout(() => {
        const err = new QgaConnectionError(`the guest agent on ${socketPath} did not answer within ${timeoutMs} ms`, 'timeout');
        client.fail(err);
        reject(err);
      }, timeoutMs);
      const onConnectError = (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        client.fail(new QgaConnectionError('not connected', 'connect'));
        reject(new QgaConnectionError(`cannot connect to guest agent socket ${socketPath}: ${err.code ?? err.message}`, 'connect', { cause: err }));
      };
      socket.once('error', onConnectError);
      socket.once('connect', () => {
        socket.removeListener('error', onConnectError);
        client
          .resync()
          .then(() => {
            clearTimeout(timer);
            resolve(client);
          })
          .catch((err: Error) => {
            clearTimeout(timer);
            client.close();
            reject(err);
          });
      });
    });
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Runs a command and resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    const id = `${this.idPrefix}${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        // The answer may still come; it is dropped, as its id is no longer pending.
        this.pending.delete(id);
        reject(new QgaConnectionError(`guest agent ${command} got no answer within ${timeoutMs} ms`, 'timeout'));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const message: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) message.arguments = args;
      this.socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  close(): void {
    this.fail(new QgaConnectionError('guest agent connection closed by the client', 'closed'));
  }

  private resync(): Promise<void> {
    const id = randomInt(1, 2 ** 31);
    return new Promise<void>((resolve) => {
      this.sync = { id, sentinelSeen: false, resolve };
      this.socket.write(Buffer.from([SENTINEL]));
      this.socket.write(`${JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } })}\n`);
    });
  }

  private onData(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    for (;;) {
      if (this.closedError) return;
      if (this.sync && !this.sync.sentinelSeen) {
        const at = this.buffer.indexOf(SENTINEL);
        if (at < 0) {
          // Nothing before the sentinel matters: keep only what may still hold it.
          this.buffer = Buffer.alloc(0);
          return;
        }
        this.buffer = this.buffer.subarray(at + 1);
        this.sync.sentinelSeen = true;
      }
      const newline = this.buffer.indexOf(0x0a);
      if (newline < 0) break;
      const line = this.buffer.subarray(0, newline).toString('utf8').trim();
      this.buffer = this.buffer.subarray(newline + 1);
      if (line) this.onLine(line);
    }
    if (this.buffer.length > MAX_LINE_BYTES) this.fail(new QgaConnectionError('the guest agent sent an over-long line', 'protocol'));
  }

  private onLine(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch (err) {
      if (this.sync) {
        // Garbage after a stray 0xFF in old output: look for the next sentinel.
        this.sync.sentinelSeen = false;
        return;
      }
      this.fail(new QgaConnectionError('the guest agent sent something other than JSON', 'protocol', { cause: err }));
      return;
    }
    if (this.sync) {
      if (message?.return === this.sync.id) {
        const { resolve } = this.sync;
        this.sync = undefined;
        resolve();
      } else {
        // A stale answer (an earlier client's sync, or a command's): wait for the next sentinel.
        this.sync.sentinelSeen = false;
      }
      return;
    }
    const id = message?.id;
    const pending = typeof id === 'string' ? this.pending.get(id) : undefined;
    // An answer without a known id (a timed-out command's) is ignored.
    if (!pending) return;
    this.pending.delete(id as string);
    clearTimeout(pending.timer);
    if (message && typeof message === 'object' && 'error' in message) {
      const error = (message.error ?? {}) as { class?: string; desc?: string };
      pending.reject(new QgaCommandError(pending.command, error.class ?? 'GenericError', error.desc ?? 'unknown error'));
    } else {
      pending.resolve(message?.return);
    }
  }

  private fail(error: QgaConnectionError): void {
    if (this.closedError) return;
    this.closedError = error;
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.pending.clear();
    this.socket.destroy();
  }
}

/** Opens a session, runs `fn` with it, and always closes it. */
export async function withQga<T>(socketPath: string, fn: (qga: QgaClient) => Promise<T>, options: QgaConnectOptions = {}): Promise<T> {
  const qga = await QgaClient.connect(socketPath, options);
  try {
    return await fn(qga);
  } finally {
    qga.close();
  }
}
