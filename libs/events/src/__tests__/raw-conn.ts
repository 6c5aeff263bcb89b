// A bare TCP client for speaking the NATS protocol byte by byte, to test
// what the nats client never sends (split frames, oversize payloads, bad
// commands) and read exactly what the server answers.

import { connect as tcpConnect, type Socket } from 'node:net';

export class RawConn {
  private text = '';
  private pos = 0;
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => (this.text += d.toString('latin1')));
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        resolve();
      });
    });
    // Resets after the server hangs up are expected in these tests.
    socket.on('error', () => undefined);
  }

  /** Connects and consumes the server's INFO line; returns its JSON. */
  static async open(url: string): Promise<{ conn: RawConn; info: Record<string, unknown> }> {
    const u = new URL(url.replace(/^nats:/, 'http:'));
    const socket = tcpConnect(Number(u.port || 4222), u.hostname);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const conn = new RawConn(socket);
    const m = await conn.expect(/^INFO (\{.*\}) *\r\n/);
    return { conn, info: JSON.parse(m[1]) as Record<string, unknown> };
  }

  get isClosed(): boolean {
    return this.ended;
  }

  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (err) => (err ? reject(err) : resolve())));
  }

  /**
   * Waits until the unread input, from its start, matches `re` (anchor it
   * with ^ to demand the next bytes), consumes through the match and
   * returns it.
   */
  async expect(re: RegExp, timeoutMs = 3000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rest = this.text.slice(this.pos);
      const m = re.exec(rest);
      if (m) {
        this.pos += m.index + m[0].length;
        return m;
      }
      if (this.ended || Date.now() > deadline) {
        throw new Error(`expected ${re} but got ${JSON.stringify(rest.slice(0, 300))}${this.ended ? ' (closed)' : ''}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** The unread input. */
  unread(): string {
    return this.text.slice(this.pos);
  }

  /** Stops reading from the socket, so the peer's output backs up. */
  pause(): void {
    this.socket.pause();
  }

  close(): void {
    this.socket.destroy();
  }
}
