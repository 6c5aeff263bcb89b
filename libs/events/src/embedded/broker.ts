// A minimal in-process NATS server, speaking the NATS core client protocol
// over TCP, so `npm start` works on a machine with neither NATS_URL nor a
// nats-server binary while every service keeps using the real `nats` client.
//
// Implemented (https://docs.nats.io/reference/reference-protocols/nats-protocol):
//   - INFO on connect (advertises `headers: true`, `max_payload`, `proto: 1`)
//   - CONNECT (verbose, pedantic, echo, headers, no_responders, name)
//   - PING/PONG both ways; a client that leaves two server PINGs unanswered
//     is closed as stale
//   - SUB with optional queue group, UNSUB with optional max_msgs
//   - PUB and HPUB, delivered as MSG/HMSG (headers stripped for clients that
//     did not negotiate them), `*` and `>` wildcards, queue groups (each
//     message to one member of each group), echo suppression
//   - no-responders: a request (PUB with reply) that reaches no subscriber
//     gets a `NATS/1.0 503` status message on its reply subject, as
//     nats-server does; nats.js relies on it to fail requests fast
//   - +OK after each command only in verbose mode; -ERR for errors
//   - max_payload (1 MiB by default) and max control line (4 KiB); framing
//     errors (unknown command, malformed arguments, payload too large,
//     missing CRLF) close the connection after -ERR; invalid subjects get
//     -ERR and the connection stays open, as with nats-server
//   - slow consumers: a client whose unsent output exceeds a limit is closed
//
// Not implemented, on purpose: JetStream (requests to $JS.API get "no
// responders", which nats.js reports as JetStream not enabled), any
// authentication or authorization, TLS, clustering/routes/gateways/leaf
// nodes, accounts, websockets, monitoring endpoints, lame duck mode. It is a
// development convenience, not a production broker: for that run nats-server.

import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Sublist, isValidPublishSubject, isValidSubscribeSubject } from '../sublist';
import { ProtocolParser, type ClientOp } from './protocol';

export interface EmbeddedBrokerOptions {
  /** Interface to listen on. Default 127.0.0.1. */
  readonly host?: string;
  /** Port; 0 (default) picks a free one. */
  readonly port?: number;
  /** Largest message payload, headers included. Default 1 MiB. */
  readonly maxPayload?: number;
  /** How often the server pings each client. Default 2 minutes. */
  readonly pingIntervalMs?: number;
  /** Unsent bytes after which a client is closed as a slow consumer. Default 64 MiB. */
  readonly maxPendingBytes?: number;
}

export interface BrokerStats {
  readonly connections: number;
  readonly subscriptions: number;
  readonly inMsgs: number;
  readonly outMsgs: number;
}

export interface EmbeddedBroker {
  /** `nats://host:port`, to hand to the nats client. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  stats(): BrokerStats;
  /** Stops listening and closes every client connection. */
  stop(): Promise<void>;
}

const MAX_CONTROL_LINE = 4096;
const CRLF = Buffer.from('\r\n');
const OK = Buffer.from('+OK\r\n');
const PING = Buffer.from('PING\r\n');
const PONG = Buffer.from('PONG\r\n');
const NO_RESPONDERS_HDR = Buffer.from('NATS/1.0 503\r\n\r\n');
// Advertised as a 2.x server so nats.js enables headers; feature checks in
// nats.js above this version concern JetStream only, which answers "no
// responders" here.
const ADVERTISED_VERSION = '2.10.0';

interface Subscription {
  readonly client: Client;
  readonly subject: string;
  readonly queue: string | undefined;
  readonly sid: string;
  max: number | undefined;
  delivered: number;
}

class Client {
  readonly subs = new Map<string, Subscription>();
  verbose = false;
  echo = true;
  headers = false;
  noResponders = false;
  name = '';
  pingsOut = 0;
  closed = false;
  private out: Buffer[] = [];
  private flushScheduled = false;

  constructor(
    readonly id: number,
    readonly socket: Socket,
    readonly parser: ProtocolParser,
    private readonly maxPending: number,
  ) {}

  send(...parts: Buffer[]): void {
    if (this.closed) return;
    this.out.push(...parts);
    // Coalesce everything produced while handling one incoming chunk (or
    // one publisher's burst) into a single socket write.
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  flush(): void {
    this.flushScheduled = false;
    if (this.closed || this.out.length === 0) return;
    const data = this.out.length === 1 ? this.out[0] : Buffer.concat(this.out);
    this.out = [];
    this.socket.write(data);
    // The peer reads slower than it is sent to; buffering without bound
    // would let one stuck client exhaust the broker's memory.
    if (this.socket.writableLength > this.maxPending) this.abort();
  }

  /** Sends `-ERR '<errText>'` after any queued output and closes. */
  close(errText?: string): void {
    if (this.closed) return;
    if (errText !== undefined) this.out.push(Buffer.from(`-ERR '${errText}'\r\n`));
    const data = Buffer.concat(this.out);
    this.out = [];
    this.closed = true;
    if (data.length > 0) this.socket.write(data);
    this.socket.end();
    // A peer that never reads would keep a half-closed socket forever.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /** Closes at once, dropping unsent output (slow consumer). */
  abort(): void {
    this.closed = true;
    this.out = [];
    this.socket.destroy();
  }
}

class Broker {
  private readonly sublist = new Sublist<Subscription>();
  private readonly clients = new Set<Client>();
  private readonly serverId = randomBytes(12).toString('hex').toUpperCase();
  private nextClientId = 1;
  private inMsgs = 0;
  private outMsgs = 0;
  private readonly pingTimer: NodeJS.Timeout;

  constructor(
    readonly server: Server,
    private readonly opts: Required<EmbeddedBrokerOptions>,
  ) {
    server.on('connection', (socket) => this.accept(socket));
    this.pingTimer = setInterval(() => this.pingAll(), opts.pingIntervalMs);
    this.pingTimer.unref();
  }

  stats(): BrokerStats {
    return {
      connections: this.clients.size,
      subscriptions: this.sublist.size,
      inMsgs: this.inMsgs,
      outMsgs: this.outMsgs,
    };
  }

  async stop(): Promise<void> {
    clearInterval(this.pingTimer);
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of [...this.clients]) {
      c.closed = true;
      c.socket.destroy();
    }
    await closed;
  }

  private accept(socket: Socket): void {
    socket.setNoDelay(true);
    const client = new Client(
      this.nextClientId++,
      socket,
      new ProtocolParser({ maxPayload: this.opts.maxPayload, maxControlLine: MAX_CONTROL_LINE }),
      this.opts.maxPendingBytes,
    );
    this.clients.add(client);
    const info = {
      server_id: this.serverId,
      server_name: 'corral-embedded',
      version: ADVERTISED_VERSION,
      proto: 1,
      go: 'none (corral embedded broker)',
      host: this.opts.host,
      port: (this.server.address() as AddressInfo).port,
      headers: true,
      max_payload: this.opts.maxPayload,
      jetstream: false,
      client_id: client.id,
      client_ip: socket.remoteAddress ?? '',
    };
    client.send(Buffer.from(`INFO ${JSON.stringify(info)}\r\n`));
    socket.on('data', (chunk: Buffer) => this.onData(client, chunk));
    socket.on('error', () => this.drop(client));
    socket.on('close', () => this.drop(client));
  }

  private onData(client: Client, chunk: Buffer): void {
    if (client.closed) return;
    const { ops, error } = client.parser.push(chunk);
    for (const op of ops) {
      if (client.closed) return;
      this.handle(client, op);
    }
    if (error) client.close(error.text);
  }

  private handle(c: Client, op: ClientOp): void {
    switch (op.op) {
      case 'CONNECT': {
        const o = op.options;
        c.verbose = o['verbose'] === true;
        c.echo = o['echo'] !== false;
        c.headers = o['headers'] === true;
        c.noResponders = o['no_responders'] === true;
        c.name = typeof o['name'] === 'string' ? o['name'] : '';
        if (c.noResponders && !c.headers) {
          c.close('Protocol Violation: no_responders requires headers');
          return;
        }
        break;
      }
      case 'PING':
        c.send(PONG);
        return;
      case 'PONG':
        c.pingsOut = 0;
        return;
      case 'SUB': {
        if (!isValidSubscribeSubject(op.subject) || (op.queue !== undefined && !isValidQueue(op.queue))) {
          c.send(Buffer.from(`-ERR 'Invalid Subject'\r\n`));
          return;
        }
        if (!c.subs.has(op.sid)) {
          const sub: Subscription = { client: c, subject: op.subject, queue: op.queue, sid: op.sid, max: undefined, delivered: 0 };
          c.subs.set(op.sid, sub);
          this.sublist.insert(op.subject, sub);
        }
        break;
      }
      case 'UNSUB': {
        const sub = c.subs.get(op.sid);
        if (sub) {
          if (op.max === undefined || op.max === 0 || sub.delivered >= op.max) this.unsubscribe(sub);
          else sub.max = op.max;
        }
        break;
      }
      case 'PUB':
      case 'HPUB': {
        if (op.op === 'HPUB' && !c.headers) {
          c.close('Protocol Violation: headers were not negotiated in CONNECT');
          return;
        }
        this.inMsgs++;
        if (!isValidPublishSubject(op.subject) || (op.reply !== undefined && !isValidPublishSubject(op.reply))) {
          c.send(Buffer.from(`-ERR 'Invalid Publish Subject'\r\n`));
          return;
        }
        this.route(c, op.subject, op.reply, op.op === 'HPUB' ? op.headers : undefined, op.payload);
        break;
      }
    }
    if (c.verbose) c.send(OK);
  }

  private route(from: Client, subject: string, reply: string | undefined, headers: Buffer | undefined, payload: Buffer): void {
    let delivered = 0;
    const groups = new Map<string, Subscription[]>();
    for (const sub of this.sublist.match(subject)) {
      if (sub.client.closed || (!from.echo && sub.client === from)) continue;
      if (sub.queue === undefined) {
        this.deliver(sub, subject, reply, headers, payload);
        delivered++;
      } else {
        const members = groups.get(sub.queue);
        if (members) members.push(sub);
        else groups.set(sub.queue, [sub]);
      }
    }
    // Like nats-server, pick a random member of each queue group.
    for (const members of groups.values()) {
      this.deliver(members[Math.floor(Math.random() * members.length)], subject, reply, headers, payload);
      delivered++;
    }
    if (delivered === 0 && reply !== undefined && from.noResponders) {
      // Tell the requester right away that nobody listens, on its own
      // subscription for the reply subject.
      const inbox = this.sublist.match(reply).find((s) => s.client === from);
      if (inbox) this.deliver(inbox, reply, undefined, NO_RESPONDERS_HDR, Buffer.alloc(0));
    }
  }

  private deliver(sub: Subscription, subject: string, reply: string | undefined, headers: Buffer | undefined, payload: Buffer): void {
    const c = sub.client;
    const r = reply === undefined ? '' : ` ${reply}`;
    if (headers !== undefined && c.headers) {
      const total = headers.length + payload.length;
      c.send(Buffer.from(`HMSG ${subject} ${sub.sid}${r} ${headers.length} ${total}\r\n`), headers, payload, CRLF);
    } else {
      c.send(Buffer.from(`MSG ${subject} ${sub.sid}${r} ${payload.length}\r\n`), payload, CRLF);
    }
    this.outMsgs++;
    sub.delivered++;
    if (sub.max !== undefined && sub.delivered >= sub.max) this.unsubscribe(sub);
  }

  private unsubscribe(sub: Subscription): void {
    sub.client.subs.delete(sub.sid);
    this.sublist.remove(sub.subject, sub);
  }

  private drop(c: Client): void {
    c.closed = true;
    if (!this.clients.delete(c)) return;
    for (const sub of c.subs.values()) this.sublist.remove(sub.subject, sub);
    c.subs.clear();
    c.socket.destroy();
  }

  private pingAll(): void {
    for (const c of this.clients) {
      if (c.closed) continue;
      if (c.pingsOut >= 2) {
        c.close('Stale Connection');
        continue;
      }
      c.pingsOut++;
      c.send(PING);
    }
  }
}

function isValidQueue(queue: string): boolean {
  // eslint-disable-next-line no-control-regex
  return queue.length > 0 && !/[\s\u0000-\u001f\u007f]/u.test(queue);
}

/** Starts the embedded broker; resolves once it is listening. */
export async function startEmbeddedBroker(options: EmbeddedBrokerOptions = {}): Promise<EmbeddedBroker> {
  const opts: Required<EmbeddedBrokerOptions> = {
    host: options.host ?? '127.0.0.1',
    port: options.port ?? 0,
    maxPayload: options.maxPayload ?? 1024 * 1024,
    pingIntervalMs: options.pingIntervalMs ?? 120_000,
    maxPendingBytes: options.maxPendingBytes ?? 64 * 1024 * 1024,
  };
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const broker = new Broker(server, opts);
  const port = (server.address() as AddressInfo).port;
  // A wildcard listen address is not something a client can dial.
  const dialHost = opts.host === '0.0.0.0' || opts.host === '::' ? '127.0.0.1' : opts.host;
  const urlHost = dialHost.includes(':') ? `[${dialHost}]` : dialHost;
  return {
    url: `nats://${urlHost}:${port}`,
    host: dialHost,
    port,
    stats: () => broker.stats(),
    stop: () => broker.stop(),
  };
}
