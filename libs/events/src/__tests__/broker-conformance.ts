// What a NATS-protocol server must do for Corral's services, as one table of
// tests: run against the embedded broker always and against nats-server when
// NATS_URL is set, so the embedded broker is checked against the real thing.
// Part uses the real `nats` client, part a raw socket for byte-level cases.

import { connect, ErrorCode, headers, type NatsConnection, type NatsError } from 'nats';
import { RawConn } from './raw-conn';
import { sleep, uniqueId, waitFor } from './helpers';

export interface BrokerTarget {
  readonly url: string;
  stop(): Promise<void>;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);
const CONNECT = (opts: Record<string, unknown> = {}): string =>
  `CONNECT ${JSON.stringify({ verbose: false, pedantic: false, headers: true, no_responders: true, ...opts })}\r\n`;

/** Defines the conformance tests in the enclosing describe block. */
export function brokerConformance(start: () => Promise<BrokerTarget>): void {
  let target: BrokerTarget;
  let conns: NatsConnection[] = [];
  let raws: RawConn[] = [];

  const nc = async (opts: { noEcho?: boolean } = {}): Promise<NatsConnection> => {
    const c = await connect({ servers: target.url, name: 'conformance', ...opts });
    conns.push(c);
    return c;
  };
  const raw = async (): Promise<RawConn> => {
    const { conn } = await RawConn.open(target.url);
    raws.push(conn);
    return conn;
  };
  /** Collects messages of a subscription as strings. */
  const collect = (c: NatsConnection, subject: string, opts: { queue?: string; max?: number } = {}): string[] => {
    const got: string[] = [];
    c.subscribe(subject, { ...opts, callback: (_err, m) => got.push(`${m.subject}:${dec(m.data)}`) });
    return got;
  };

  beforeAll(async () => {
    target = await start();
  });
  afterAll(async () => {
    await target?.stop();
  });
  afterEach(async () => {
    for (const r of raws) r.close();
    await Promise.all(conns.map((c) => c.close()));
    conns = [];
    raws = [];
  });

  describe('with the nats client', () => {
    it('advertises headers and a 1 MiB max_payload', async () => {
      const c = await nc();
      expect(c.info?.headers).toBe(true);
      expect(c.info?.max_payload).toBe(1024 * 1024);
    });

    it('delivers a published message to a subscriber on another connection', async () => {
      const [a, b] = [await nc(), await nc()];
      const s = uniqueId('t');
      const got = collect(b, `${s}.x`);
      await b.flush();
      a.publish(`${s}.x`, enc('hello'));
      await a.flush();
      await waitFor('message', () => got.length === 1);
      expect(got).toEqual([`${s}.x:hello`]);
    });

    it('matches * to one token and > to one or more', async () => {
      const [a, b] = [await nc(), await nc()];
      const s = uniqueId('t');
      const star = collect(b, `${s}.*.x`);
      const tail = collect(b, `${s}.>`);
      await b.flush();
      for (const subj of [`${s}.a.x`, `${s}.a.y`, `${s}.a.b.x`, `${s}.b.x`, s]) a.publish(subj, enc('m'));
      await a.flush();
      await waitFor('wildcard deliveries', () => star.length === 2 && tail.length === 4);
      await sleep(30);
      expect(star).toEqual([`${s}.a.x:m`, `${s}.b.x:m`]);
      expect(tail).toEqual([`${s}.a.x:m`, `${s}.a.y:m`, `${s}.a.b.x:m`, `${s}.b.x:m`]);
    });

    it('gives each message to one member of a queue group and all to a plain subscriber', async () => {
      const members = [await nc(), await nc(), await nc()];
      const [plainConn, pub] = [await nc(), await nc()];
      const s = uniqueId('t');
      const q = uniqueId('q');
      const got = members.map((m) => collect(m, s, { queue: q }));
      const plain = collect(plainConn, s);
      await Promise.all([...members, plainConn].map((m) => m.flush()));
      const n = 90;
      for (let i = 0; i < n; i++) pub.publish(s, enc(String(i)));
      await pub.flush();
      await waitFor('all deliveries', () => got.flat().length === n && plain.length === n);
      await sleep(30);
      const all = got.flat().map((x) => Number(x.split(':')[1]));
      expect(all.sort((x, y) => x - y)).toEqual(Array.from({ length: n }, (_, i) => i));
      expect(plain).toHaveLength(n);
    });

    it('answers a request through the reply subject', async () => {
      const [responder, requester] = [await nc(), await nc()];
      const s = uniqueId('svc');
      responder.subscribe(s, { callback: (_e, m) => m.respond(enc(`re:${dec(m.data)}`)) });
      await responder.flush();
      const reply = await requester.request(s, enc('ping'), { timeout: 2000 });
      expect(dec(reply.data)).toBe('re:ping');
    });

    it('fails a request with no responders at once', async () => {
      const c = await nc();
      const started = Date.now();
      const err = (await c.request(uniqueId('nobody'), enc('?'), { timeout: 5000 }).catch((e) => e)) as NatsError;
      expect(err.code).toBe(ErrorCode.NoResponders);
      expect(Date.now() - started).toBeLessThan(2000);
    });

    it('carries headers to the subscriber and through a request', async () => {
      const [a, b] = [await nc(), await nc()];
      const s = uniqueId('t');
      const seen: Array<{ key?: string; data: string }> = [];
      b.subscribe(s, {
        callback: (_e, m) => {
          seen.push({ key: m.headers?.get('Corral-Key'), data: dec(m.data) });
          if (m.reply) {
            const h = headers();
            h.set('Corral-Answer', m.headers?.get('Corral-Key') ?? '');
            m.respond(enc('ok'), { headers: h });
          }
        },
      });
      await b.flush();
      const h = headers();
      h.set('Corral-Key', 'k-1');
      a.publish(s, enc('body'), { headers: h });
      const reply = await a.request(s, enc('req'), { headers: h, timeout: 2000 });
      expect(reply.headers?.get('Corral-Answer')).toBe('k-1');
      await waitFor('both', () => seen.length === 2);
      expect(seen[0]).toEqual({ key: 'k-1', data: 'body' });
    });

    it('keeps 1000 messages in order', async () => {
      const [a, b] = [await nc(), await nc()];
      const s = uniqueId('t');
      const got = collect(b, s);
      await b.flush();
      for (let i = 0; i < 1000; i++) a.publish(s, enc(String(i)));
      await a.flush();
      await waitFor('1000 messages', () => got.length === 1000);
      expect(got.map((x) => Number(x.split(':')[1]))).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    });

    it('ends a subscription after max messages', async () => {
      const [a, b] = [await nc(), await nc()];
      const s = uniqueId('t');
      const got = collect(b, s, { max: 3 });
      await b.flush();
      for (let i = 0; i < 6; i++) a.publish(s, enc(String(i)));
      await a.flush();
      await waitFor('3 messages', () => got.length === 3);
      await sleep(50);
      expect(got).toHaveLength(3);
    });

    it('does not echo to the publisher when noEcho is set', async () => {
      const c = await nc({ noEcho: true });
      const other = await nc();
      const s = uniqueId('t');
      const own = collect(c, s);
      const theirs = collect(other, s);
      await Promise.all([c.flush(), other.flush()]);
      c.publish(s, enc('x'));
      await c.flush();
      await waitFor('other connection', () => theirs.length === 1);
      await sleep(30);
      expect(own).toEqual([]);
    });

    it('refuses a 2 MiB payload', async () => {
      const c = await nc();
      expect(() => c.publish(uniqueId('t'), new Uint8Array(2 * 1024 * 1024))).toThrow(/payload/i);
    });
  });

  describe('on a raw socket', () => {
    it('assembles a command and payload split across writes', async () => {
      const sub = await nc();
      const s = uniqueId('t');
      const got = collect(sub, s);
      await sub.flush();
      const r = await raw();
      const payload = 'x'.repeat(100_000) + 'END';
      const wire = `${CONNECT()}PUB ${s} ${payload.length}\r\n${payload}\r\nPING\r\n`;
      // Cut in the verb, the subject, the size, the payload and the CRLF.
      const cuts = [3, wire.indexOf('PUB') + 2, wire.indexOf(s) + 4, wire.indexOf('\r\nxxx') - 1, wire.indexOf('\r\nxxx') + 1, wire.indexOf('END') + 1, wire.indexOf('END\r') + 4];
      let at = 0;
      for (const cut of [...cuts, wire.length]) {
        await r.write(wire.slice(at, cut));
        at = cut;
        await sleep(10);
      }
      await r.expect(/PONG\r\n/);
      await waitFor('the message', () => got.length === 1);
      expect(got[0]).toBe(`${s}:${payload}`);
    });

    it('handles pipelined commands in one write', async () => {
      const r = await raw();
      const s = uniqueId('t');
      await r.write(`${CONNECT()}SUB ${s} 1\r\nPUB ${s} 2\r\nhi\r\nPUB ${s} reply.to 3\r\nyou\r\nPING\r\n`);
      await r.expect(new RegExp(`^MSG ${s} 1 2\\r\\nhi\\r\\n`));
      await r.expect(new RegExp(`^MSG ${s} 1 reply\\.to 3\\r\\nyou\\r\\n`));
      await r.expect(/^PONG\r\n/);
    });

    it('sends HMSG to header clients and strips headers for others', async () => {
      const withHdr = await raw();
      const noHdr = await raw();
      const s = uniqueId('t');
      await withHdr.write(`${CONNECT()}SUB ${s} 7\r\nPING\r\n`);
      await noHdr.write(`${CONNECT({ headers: false, no_responders: false })}SUB ${s} 8\r\nPING\r\n`);
      await withHdr.expect(/^PONG\r\n/);
      await noHdr.expect(/^PONG\r\n/);
      const pub = await raw();
      const hdr = 'NATS/1.0\r\nA: b\r\n\r\n';
      await pub.write(`${CONNECT()}HPUB ${s} ${hdr.length} ${hdr.length + 4}\r\n${hdr}data\r\nPING\r\n`);
      await pub.expect(/^PONG\r\n/);
      await withHdr.expect(new RegExp(`^HMSG ${s} 7 ${hdr.length} ${hdr.length + 4}\\r\\n${hdr}data\\r\\n`));
      await noHdr.expect(new RegExp(`^MSG ${s} 8 4\\r\\ndata\\r\\n`));
    });

    it('stops after UNSUB max', async () => {
      const r = await raw();
      const s = uniqueId('t');
      await r.write(`${CONNECT()}SUB ${s} 1\r\nUNSUB 1 2\r\nPING\r\n`);
      await r.expect(/^PONG\r\n/);
      await r.write(`PUB ${s} 1\r\na\r\nPUB ${s} 1\r\nb\r\nPUB ${s} 1\r\nc\r\nPING\r\n`);
      await r.expect(/^MSG \S+ 1 1\r\na\r\nMSG \S+ 1 1\r\nb\r\nPONG\r\n/);
    });

    it('answers +OK in verbose mode only', async () => {
      const r = await raw();
      await r.write(`${CONNECT({ verbose: true })}SUB ${uniqueId('t')} 1\r\nPING\r\n`);
      await r.expect(/^\+OK\r\n\+OK\r\nPONG\r\n/);
      const q = await raw();
      await q.write(`${CONNECT()}SUB ${uniqueId('t')} 1\r\nPING\r\n`);
      await q.expect(/^PONG\r\n/);
    });

    it('rejects an invalid subscription subject and keeps the connection', async () => {
      const r = await raw();
      await r.write(`${CONNECT()}SUB foo..bar 1\r\n`);
      await r.expect(/^-ERR '[^']*subject[^']*'\r\n/i);
      await r.write('PING\r\n');
      await r.expect(/^PONG\r\n/);
      expect(r.isClosed).toBe(false);
    });

    it('refuses a payload over max_payload and closes the connection', async () => {
      const r = await raw();
      await r.write(`${CONNECT()}PUB ${uniqueId('t')} ${2 * 1024 * 1024}\r\n`);
      await r.expect(/^-ERR 'Maximum Payload Violation'\r\n/);
      await r.closed;
    });

    it('answers an unknown command with -ERR and closes the connection', async () => {
      const r = await raw();
      await r.write(`${CONNECT()}FROB x\r\n`);
      await r.expect(/^-ERR 'Unknown Protocol Operation'\r\n/);
      await r.closed;
    });
  });
}
