import { createConnection, type Socket } from 'node:net';

// A small client for QEMU's machine protocol (QMP) on a unix socket: one JSON
// object per line each way. The server greets first; the client must send
// `qmp_capabilities` before any other command. Every command carries an id,
// and its answer (`return` or `error`) carries the same id back; anything
// with an `event` key is an asynchronous event, kept for whoever wants it.
// QEMU serves one client at a time on a socket, so callers keep sessions
// short and never hold one while waiting on something else.

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  version?: { qemu?: { major: number; minor: number; micro: number }; package?: string };
  capabilities?: string[];
}

export interface QmpConnectOptions {
  /** For the whole handshake (connect, greeting, qmp_capabilities). Default 5 s. */
  timeoutMs?: number;
  /** Default for each command's answer. Default 10 s. */
  commandTimeoutMs?: number;
  /** How many events are kept in `events` (oldest dropped). Default 100. */
  maxEvents?: number;
}

export interface QmpRetryOptions extends QmpConnectOptions {
  /** Keep retrying a socket that is missing or refuses, until this deadline. Default 10 s. */
  retryForMs?: number;
  retryIntervalMs?: number;
  /** Checked before each retry: stop early (e.g. the VM process exited). */
  shouldRetry?: () => boolean;
}

/** QEMU answered a command with an error. */
export class QmpCommandError extends Error {
  override readonly name = 'QmpCommandError';
  constructor(
    readonly command: string,
    /** QMP error class, e.g. GenericError, CommandNotFound, DeviceNotActive. */
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
  }
}

/** The connection failed, closed, or did not answer in time. */
export class QmpConnectionError extends Error {
  override readonly name = 'QmpConnectionError';
  constructor(
    message: string,
    readonly reason: 'connect' | 'closed' | 'timeout' | 'protocol',
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

/** A line longer than this is not QMP: the connection is dropped. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

export class QmpClient {
  /** Events received so far, oldest first (bounded). */
  readonly events: QmpEvent[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<(event: QmpEvent) => void>();
  private nextId = 1;
  private buffer = '';
  private closedError?: QmpConnectionError;
  private greetingWaiter?: { resolve(g: QmpGreeting): void; reject(e: Error): void };
  private greeting?: QmpGreeting;

  private constructor(
    private readonly socket: Socket,
    private readonly commandTimeoutMs: number,
    private readonly maxEvents: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new QmpConnectionError(`QMP connection failed: ${err.message}`, 'closed', { cause: err })));
    socket.on('close', () => this.fail(new QmpConnectionError('QMP connection closed', 'closed')));
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    return new Promise<QmpClient>((resolve, reject) => {
      const socket = createConnection({ path: socketPath });
      const client = new QmpClient(socket, options.commandTimeoutMs ?? 10_000, options.maxEvents ?? 100);
      const timer = setTimeout(() => {
        const err = new QmpConnectionError(`QMP handshake on ${socketPath} timed out after ${timeoutMs} ms`, 'timeout');
        client.fail(err);
        reject(err);
      }, timeoutMs);
      const onConnectError = (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new QmpConnectionError(`cannot connect to QMP socket ${socketPath}: ${err.code ?? err.message}`, 'connect', { cause: err }));
      };
      socket.once('error', onConnectError);
      socket.once('connect', () => {
        socket.removeListener('error', onConnectError);
        client
          .waitForGreeting()
          .then(() => client.execute('qmp_capabilities', undefined, { timeoutMs }))
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

  /**
   * Like connect, but retries while the socket does not exist yet or refuses
   * (QEMU has just been started), until `retryForMs`.
   */
  static async connectWithRetry(socketPath: string, options: QmpRetryOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (options.retryForMs ?? 10_000);
    const interval = options.retryIntervalMs ?? 50;
    for (;;) {
      try {
        return await QmpClient.connect(socketPath, options);
      } catch (err) {
        const retriable = err instanceof QmpConnectionError && err.reason === 'connect';
        if (!retriable || Date.now() >= deadline || (options.shouldRetry && !options.shouldRetry())) throw err;
      }
      await new Promise((r) => setTimeout(r, interval));
    }
  }

  /** What the server said when the connection opened. */
  get serverGreeting(): QmpGreeting | undefined {
    return this.greeting;
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Runs a command and resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        // The answer may still come; it is dropped, as its id is no longer pending.
        this.pending.delete(id);
        reject(new QmpConnectionError(`QMP ${command} got no answer within ${timeoutMs} ms`, 'timeout'));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const message: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) message.arguments = args;
      this.socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  /** Called for each event from now on; returns an unsubscribe function. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.fail(new QmpConnectionError('QMP connection closed by the client', 'closed'));
  }

  private waitForGreeting(): Promise<QmpGreeting> {
    if (this.greeting) return Promise.resolve(this.greeting);
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => (this.greetingWaiter = { resolve, reject }));
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line) this.onLine(line);
      if (this.closedError) return;
    }
    if (this.buffer.length > MAX_LINE_BYTES) this.fail(new QmpConnectionError('QMP server sent an over-long line', 'protocol'));
  }

  private onLine(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch (err) {
      this.fail(new QmpConnectionError('QMP server sent something other than JSON', 'protocol', { cause: err }));
      return;
    }
    if (typeof message !== 'object' || message === null) return;
    if ('QMP' in message) {
      this.greeting = (message.QMP ?? {}) as QmpGreeting;
      this.greetingWaiter?.resolve(this.greeting);
      this.greetingWaiter = undefined;
      return;
    }
    if (typeof message.event === 'string') {
      const event = message as unknown as QmpEvent;
      this.events.push(event);
      if (this.events.length > this.maxEvents) this.events.splice(0, this.events.length - this.maxEvents);
      for (const listener of this.listeners) listener(event);
      return;
    }
    const id = message.id;
    const pending = typeof id === 'number' ? this.pending.get(id) : undefined;
    // An answer without a known id (a timed-out command, or one sent by
    // another client) is ignored.
    if (!pending) return;
    this.pending.delete(id as number);
    clearTimeout(pending.timer);
    if ('error' in message) {
      const error = (message.error ?? {}) as { class?: string; desc?: string };
      pending.reject(new QmpCommandError(pending.command, error.class ?? 'GenericError', error.desc ?? 'unknown error'));
    } else {
      pending.resolve(message.return);
    }
  }

  private fail(error: QmpConnectionError): void {
    if (this.closedError) return;
    this.closedError = error;
    this.greetingWaiter?.reject(error);
    this.greetingWaiter = undefined;
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.pending.clear();
    this.listeners.clear();
    this.socket.destroy();
  }
}

/** Opens a session, runs `fn` with it, and always closes it. */
export async function withQmp<T>(socketPath: string, fn: (qmp: QmpClient) => Promise<T>, options: QmpRetryOptions = {}): Promise<T> {
  const qmp = options.retryForMs ? await QmpClient.connectWithRetry(socketPath, options) : await QmpClient.connect(socketPath, options);
  try {
    return await fn(qmp);
  } finally {
    qmp.close();
  }
}
