// Incremental parser for the client side of the NATS core text protocol
// (https://docs.nats.io/reference/reference-protocols/nats-protocol).
//
// TCP delivers a byte stream, not commands: one `data` event may hold half a
// control line, several pipelined commands, or a payload split across many
// events. The parser keeps what it has not consumed yet and produces a
// command only once its control line and its whole payload (plus the CRLF
// after it) have arrived. Any framing error is fatal: after it the stream
// cannot be re-synchronised, so the broker closes the connection.

export type ClientOp =
  | { readonly op: 'CONNECT'; readonly options: Record<string, unknown> }
  | { readonly op: 'PING' }
  | { readonly op: 'PONG' }
  | { readonly op: 'SUB'; readonly subject: string; readonly queue?: string; readonly sid: string }
  | { readonly op: 'UNSUB'; readonly sid: string; readonly max?: number }
  | { readonly op: 'PUB'; readonly subject: string; readonly reply?: string; readonly payload: Buffer }
  | {
      readonly op: 'HPUB';
      readonly subject: string;
      readonly reply?: string;
      /** The header block, `NATS/1.0...\r\n\r\n`. */
      readonly headers: Buffer;
      readonly payload: Buffer;
    };

/** A violation after which the connection must be closed. */
export class ProtocolViolation extends Error {
  /** `text` is what the server sends in `-ERR '<text>'`. */
  constructor(readonly text: string) {
    super(text);
    this.name = 'ProtocolViolation';
  }
}

export interface ParserLimits {
  /** Largest payload (headers included) of a PUB/HPUB. */
  readonly maxPayload: number;
  /** Longest control line, CRLF excluded. */
  readonly maxControlLine: number;
}

export interface ParseResult {
  readonly ops: ClientOp[];
  /** Set when parsing stopped at a violation; ops before it are valid. */
  readonly error?: ProtocolViolation;
}

interface AwaitingPayload {
  readonly op: 'PUB' | 'HPUB';
  readonly subject: string;
  readonly reply?: string;
  readonly headerSize: number;
  readonly totalSize: number;
}

const EMPTY = Buffer.alloc(0);
const NATS_HDR = Buffer.from('NATS/1.0');
const LF = 0x0a;
const CR = 0x0d;
const SIZE = /^\d{1,10}$/;

export class ProtocolParser {
  // Unconsumed bytes are `buf[off..]` followed by `tail`. While waiting for a
  // large payload, chunks go to `tail` without copying and are joined once
  // the payload is complete, so a 1 MiB payload in 64 KiB pieces is copied
  // once instead of once per piece.
  private buf: Buffer = EMPTY;
  private off = 0;
  private tail: Buffer[] = [];
  private tailSize = 0;
  private awaiting: AwaitingPayload | undefined;
  private failed: ProtocolViolation | undefined;

  constructor(private readonly limits: ParserLimits) {}

  /** Feeds bytes; returns the commands they completed. */
  push(chunk: Buffer): ParseResult {
    if (this.failed) return { ops: [], error: this.failed };
    if (this.awaiting) {
      const have = this.buf.length - this.off + this.tailSize + chunk.length;
      if (have < this.awaiting.totalSize + 2) {
        this.tail.push(chunk);
        this.tailSize += chunk.length;
        return { ops: [] };
      }
    }
    if (this.off >= this.buf.length && this.tail.length === 0) {
      this.buf = chunk;
    } else {
      this.buf = Buffer.concat([this.buf.subarray(this.off), ...this.tail, chunk]);
      this.tail = [];
      this.tailSize = 0;
    }
    this.off = 0;

    const ops: ClientOp[] = [];
    try {
      for (;;) {
        const op = this.awaiting ? this.readPayload(this.awaiting) : this.readLine();
        if (op === undefined) break;
        if (op !== null) ops.push(op);
      }
    } catch (err) {
      if (!(err instanceof ProtocolViolation)) throw err;
      this.failed = err;
      this.buf = EMPTY;
      this.off = 0;
      return { ops, error: err };
    }
    if (this.off >= this.buf.length) {
      this.buf = EMPTY;
      this.off = 0;
    }
    return { ops };
  }

  /** undefined: need more bytes; null: consumed a line without a command. */
  private readLine(): ClientOp | null | undefined {
    const { buf, off } = this;
    const nl = buf.indexOf(LF, off);
    const lineEnd = nl < 0 ? buf.length : nl > off && buf[nl - 1] === CR ? nl - 1 : nl;
    if (lineEnd - off > this.limits.maxControlLine) throw new ProtocolViolation('Maximum Control Line Exceeded');
    if (nl < 0) return undefined;
    const line = buf.toString('utf8', off, lineEnd);
    this.off = nl + 1;
    return this.parseLine(line);
  }

  private readPayload(a: AwaitingPayload): ClientOp | undefined {
    const { buf, off } = this;
    if (buf.length - off < a.totalSize + 2) return undefined;
    const end = off + a.totalSize;
    if (buf[end] !== CR || buf[end + 1] !== LF) {
      throw new ProtocolViolation('Protocol Violation: payload size does not match, expected CRLF after payload');
    }
    const body = buf.subarray(off, end);
    this.off = end + 2;
    this.awaiting = undefined;
    if (a.op === 'PUB') return { op: 'PUB', subject: a.subject, reply: a.reply, payload: body };
    const headers = body.subarray(0, a.headerSize);
    if (!headers.subarray(0, 8).equals(NATS_HDR)) {
      throw new ProtocolViolation('Protocol Violation: header block must start with NATS/1.0');
    }
    return { op: 'HPUB', subject: a.subject, reply: a.reply, headers, payload: body.subarray(a.headerSize) };
  }

  private parseLine(line: string): ClientOp | null {
    const trimmed = line.trim();
    if (trimmed.length === 0) return null; // tolerated, as nats-server does
    const sp = trimmed.search(/[ \t]/);
    const verb = (sp < 0 ? trimmed : trimmed.slice(0, sp)).toUpperCase();
    const rest = sp < 0 ? '' : trimmed.slice(sp + 1).trim();
    const args = rest.length === 0 ? [] : rest.split(/[ \t]+/);
    switch (verb) {
      case 'PING':
        return { op: 'PING' };
      case 'PONG':
        return { op: 'PONG' };
      case 'CONNECT': {
        let options: unknown;
        try {
          options = JSON.parse(rest);
        } catch {
          throw new ProtocolViolation('Protocol Violation: CONNECT options are not valid JSON');
        }
        if (typeof options !== 'object' || options === null || Array.isArray(options)) {
          throw new ProtocolViolation('Protocol Violation: CONNECT options must be a JSON object');
        }
        return { op: 'CONNECT', options: options as Record<string, unknown> };
      }
      case 'SUB':
        if (args.length === 2) return { op: 'SUB', subject: args[0], sid: args[1] };
        if (args.length === 3) return { op: 'SUB', subject: args[0], queue: args[1], sid: args[2] };
        throw new ProtocolViolation('Protocol Violation: SUB <subject> [queue group] <sid>');
      case 'UNSUB':
        if (args.length === 1) return { op: 'UNSUB', sid: args[0] };
        if (args.length === 2 && SIZE.test(args[1])) return { op: 'UNSUB', sid: args[0], max: Number(args[1]) };
        throw new ProtocolViolation('Protocol Violation: UNSUB <sid> [max_msgs]');
      case 'PUB': {
        if ((args.length !== 2 && args.length !== 3) || !SIZE.test(args[args.length - 1])) {
          throw new ProtocolViolation('Protocol Violation: PUB <subject> [reply-to] <#bytes>');
        }
        const size = this.checkSize(Number(args[args.length - 1]));
        this.awaiting = { op: 'PUB', subject: args[0], reply: args.length === 3 ? args[1] : undefined, headerSize: 0, totalSize: size };
        return null;
      }
      case 'HPUB': {
        const n = args.length;
        if ((n !== 3 && n !== 4) || !SIZE.test(args[n - 1]) || !SIZE.test(args[n - 2])) {
          throw new ProtocolViolation('Protocol Violation: HPUB <subject> [reply-to] <#header bytes> <#total bytes>');
        }
        const headerSize = Number(args[n - 2]);
        const totalSize = this.checkSize(Number(args[n - 1]));
        if (headerSize > totalSize || headerSize < NATS_HDR.length) {
          throw new ProtocolViolation('Protocol Violation: HPUB header size out of range');
        }
        this.awaiting = { op: 'HPUB', subject: args[0], reply: n === 4 ? args[1] : undefined, headerSize, totalSize };
        return null;
      }
      default:
        throw new ProtocolViolation('Unknown Protocol Operation');
    }
  }

  private checkSize(size: number): number {
    if (size > this.limits.maxPayload) throw new ProtocolViolation('Maximum Payload Violation');
    return size;
  }
}
