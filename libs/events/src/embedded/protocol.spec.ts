import fc from 'fast-check';
import { ProtocolParser, type ClientOp } from './protocol';

const limits = { maxPayload: 1024 * 1024, maxControlLine: 4096 };

type Cmd =
  | { kind: 'PUB'; subject: string; reply?: string; payload: Buffer }
  | { kind: 'HPUB'; subject: string; reply?: string; headers: Buffer; payload: Buffer }
  | { kind: 'SUB'; subject: string; queue?: string; sid: string }
  | { kind: 'UNSUB'; sid: string; max?: number }
  | { kind: 'PING' }
  | { kind: 'PONG' };

function wire(c: Cmd): Buffer {
  switch (c.kind) {
    case 'PUB':
      return Buffer.concat([Buffer.from(`PUB ${c.subject}${c.reply ? ` ${c.reply}` : ''} ${c.payload.length}\r\n`), c.payload, Buffer.from('\r\n')]);
    case 'HPUB': {
      const total = c.headers.length + c.payload.length;
      return Buffer.concat([Buffer.from(`HPUB ${c.subject}${c.reply ? ` ${c.reply}` : ''} ${c.headers.length} ${total}\r\n`), c.headers, c.payload, Buffer.from('\r\n')]);
    }
    case 'SUB':
      return Buffer.from(`SUB ${c.subject}${c.queue ? ` ${c.queue}` : ''} ${c.sid}\r\n`);
    case 'UNSUB':
      return Buffer.from(`UNSUB ${c.sid}${c.max === undefined ? '' : ` ${c.max}`}\r\n`);
    default:
      return Buffer.from(`${c.kind}\r\n`);
  }
}

function expected(c: Cmd): ClientOp {
  switch (c.kind) {
    case 'PUB':
      return { op: 'PUB', subject: c.subject, reply: c.reply, payload: c.payload };
    case 'HPUB':
      return { op: 'HPUB', subject: c.subject, reply: c.reply, headers: c.headers, payload: c.payload };
    case 'SUB':
      return c.queue ? { op: 'SUB', subject: c.subject, queue: c.queue, sid: c.sid } : { op: 'SUB', subject: c.subject, sid: c.sid };
    case 'UNSUB':
      return c.max === undefined ? { op: 'UNSUB', sid: c.sid } : { op: 'UNSUB', sid: c.sid, max: c.max };
    default:
      return { op: c.kind };
  }
}

// Normalise Buffers so toEqual compares bytes, whatever slice they sit in.
const norm = (ops: ClientOp[]): unknown[] =>
  ops.map((o) => JSON.parse(JSON.stringify(o, (_k, v) => (v && v.type === 'Buffer' ? Buffer.from(v.data).toString('hex') : v))));

const token = fc.stringMatching(/^[A-Za-z0-9_-]{1,8}$/);
const subject = fc.array(token, { minLength: 1, maxLength: 4 }).map((t) => t.join('.'));
// Payloads include CR, LF and "PUB" so a parser that looked for line ends
// inside payloads would break.
const payload = fc
  .array(fc.oneof(fc.constantFrom('\r\n', '\r', '\n', 'PUB x 1\r\n', ' '), fc.string({ maxLength: 6 })), { maxLength: 8 })
  .map((p) => Buffer.from(p.join('')));
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  fc.record({ kind: fc.constant('PUB' as const), subject, reply: fc.option(subject, { nil: undefined }), payload }),
  fc.record({
    kind: fc.constant('HPUB' as const),
    subject,
    reply: fc.option(subject, { nil: undefined }),
    headers: fc.constantFrom('NATS/1.0\r\n\r\n', 'NATS/1.0\r\nA: b\r\n\r\n', 'NATS/1.0 503\r\n\r\n').map((h) => Buffer.from(h)),
    payload,
  }),
  fc.record({ kind: fc.constant('SUB' as const), subject, queue: fc.option(token, { nil: undefined }), sid: token }),
  fc.record({ kind: fc.constant('UNSUB' as const), sid: token, max: fc.option(fc.nat(1000), { nil: undefined }) }),
  fc.record({ kind: fc.constantFrom('PING' as const, 'PONG' as const) }),
);

describe('ProtocolParser', () => {
  it('yields the same commands however the byte stream is cut into chunks', () => {
    fc.assert(
      fc.property(fc.array(cmd, { minLength: 1, maxLength: 12 }), fc.array(fc.nat(), { maxLength: 20 }), (cmds, cutSeeds) => {
        const bytes = Buffer.concat(cmds.map(wire));
        const cuts = [...new Set(cutSeeds.map((s) => s % (bytes.length + 1)))].sort((a, b) => a - b);
        const parser = new ProtocolParser(limits);
        const ops: ClientOp[] = [];
        let at = 0;
        for (const cut of [...cuts, bytes.length]) {
          const r = parser.push(bytes.subarray(at, cut));
          expect(r.error).toBeUndefined();
          ops.push(...r.ops);
          at = cut;
        }
        expect(norm(ops)).toEqual(norm(cmds.map(expected)));
      }),
      { numRuns: 300 },
    );
  });

  it('parses byte by byte', () => {
    const bytes = Buffer.from('CONNECT {"verbose":true}\r\nSUB a.b q 1\r\nPUB a.b r 5\r\nhe\r\no\r\nping\r\n');
    const parser = new ProtocolParser(limits);
    const ops: ClientOp[] = [];
    for (let i = 0; i < bytes.length; i++) ops.push(...parser.push(bytes.subarray(i, i + 1)).ops);
    expect(norm(ops)).toEqual(
      norm([
        { op: 'CONNECT', options: { verbose: true } },
        { op: 'SUB', subject: 'a.b', queue: 'q', sid: '1' },
        { op: 'PUB', subject: 'a.b', reply: 'r', payload: Buffer.from('he\r\no') },
        { op: 'PING' },
      ]),
    );
  });

  it('accepts verbs in any case and tabs or repeated spaces between arguments', () => {
    const r = new ProtocolParser(limits).push(Buffer.from('sub\ta.b   1\r\nUnSub 1 5\r\n'));
    expect(r.ops).toEqual([
      { op: 'SUB', subject: 'a.b', sid: '1' },
      { op: 'UNSUB', sid: '1', max: 5 },
    ]);
  });

  it.each([
    ['an unknown verb', 'FROB\r\n', 'Unknown Protocol Operation'],
    ['a payload over the limit', `PUB a ${1024 * 1024 + 1}\r\n`, 'Maximum Payload Violation'],
    ['an HPUB over the limit', `HPUB a 12 ${1024 * 1024 + 1}\r\n`, 'Maximum Payload Violation'],
    ['a payload not followed by CRLF', 'PUB a 2\r\nabc\r\n', 'payload size does not match'],
    ['SUB without a sid', 'SUB a\r\n', 'SUB <subject>'],
    ['PUB with a non-numeric size', 'PUB a b\r\n', 'PUB <subject>'],
    ['UNSUB with a bad max', 'UNSUB 1 x\r\n', 'UNSUB <sid>'],
    ['a header size above the total', 'HPUB a 20 10\r\n', 'header size'],
    ['a header block not starting NATS/1.0', 'HPUB a 12 12\r\nHTTP/1.1 200\r\n', 'NATS/1.0'],
    ['CONNECT with bad JSON', 'CONNECT {nope\r\n', 'not valid JSON'],
    ['a control line over 4 KiB', `SUB ${'a'.repeat(5000)} 1\r\n`, 'Maximum Control Line Exceeded'],
  ])('rejects %s', (_what, input, message) => {
    const r = new ProtocolParser(limits).push(Buffer.from(input));
    expect(r.error?.text).toContain(message);
  });

  it('detects an over-long control line before its end arrives', () => {
    const parser = new ProtocolParser(limits);
    expect(parser.push(Buffer.from('SUB ')).error).toBeUndefined();
    expect(parser.push(Buffer.alloc(5000, 0x61)).error?.text).toBe('Maximum Control Line Exceeded');
  });

  it('keeps the commands before a violation and stays failed after it', () => {
    const parser = new ProtocolParser(limits);
    const r = parser.push(Buffer.from('PING\r\nSUB a 1\r\nBOGUS\r\nPING\r\n'));
    expect(r.ops).toEqual([{ op: 'PING' }, { op: 'SUB', subject: 'a', sid: '1' }]);
    expect(r.error?.text).toBe('Unknown Protocol Operation');
    expect(parser.push(Buffer.from('PING\r\n'))).toEqual({ ops: [], error: r.error });
  });

  it('assembles a 1 MiB payload sent in 64 KiB chunks', () => {
    const body = Buffer.alloc(1024 * 1024, 7);
    const bytes = Buffer.concat([Buffer.from(`PUB big ${body.length}\r\n`), body, Buffer.from('\r\n')]);
    const parser = new ProtocolParser(limits);
    const ops: ClientOp[] = [];
    for (let at = 0; at < bytes.length; at += 65536) ops.push(...parser.push(bytes.subarray(at, at + 65536)).ops);
    expect(ops).toHaveLength(1);
    expect(ops[0].op === 'PUB' && ops[0].payload.equals(body)).toBe(true);
  });

  it('ignores empty lines', () => {
    expect(new ProtocolParser(limits).push(Buffer.from('\r\n\r\nPING\r\n')).ops).toEqual([{ op: 'PING' }]);
  });
});
