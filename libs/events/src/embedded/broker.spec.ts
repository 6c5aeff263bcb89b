// The embedded broker against the conformance table shared with nats-server
// (see broker.int.spec.ts), plus what only the embedded broker exposes.

import { connect } from 'nats';
import { brokerConformance } from '../__tests__/broker-conformance';
import { waitFor } from '../__tests__/helpers';
import { RawConn } from '../__tests__/raw-conn';
import { startEmbeddedBroker } from './broker';

describe('embedded broker', () => {
  describe('conformance', () => {
    brokerConformance(async () => startEmbeddedBroker());
  });

  it('listens on a free port by default and stops cleanly with clients attached', async () => {
    const broker = await startEmbeddedBroker();
    expect(broker.url).toBe(`nats://127.0.0.1:${broker.port}`);
    const nc = await connect({ servers: broker.url, reconnect: false });
    nc.subscribe('a.b');
    await nc.flush();
    expect(broker.stats()).toMatchObject({ connections: 1, subscriptions: 1 });
    await broker.stop();
    await nc.closed();
    expect(nc.isClosed()).toBe(true);
  });

  it('closes a client that leaves its pings unanswered', async () => {
    const broker = await startEmbeddedBroker({ pingIntervalMs: 50 });
    try {
      const { conn } = await RawConn.open(broker.url);
      await conn.write('CONNECT {}\r\n');
      await conn.expect(/^PING\r\n/);
      await conn.expect(/^PING\r\n/);
      await conn.expect(/^-ERR 'Stale Connection'\r\n/);
      await conn.closed;
    } finally {
      await broker.stop();
    }
  });

  it('keeps a client that answers its pings', async () => {
    const broker = await startEmbeddedBroker({ pingIntervalMs: 30 });
    try {
      const nc = await connect({ servers: broker.url });
      await new Promise((r) => setTimeout(r, 200));
      expect(nc.isClosed()).toBe(false);
      await nc.close();
    } finally {
      await broker.stop();
    }
  });

  it('refuses HPUB from a client that did not negotiate headers', async () => {
    const broker = await startEmbeddedBroker();
    try {
      const { conn } = await RawConn.open(broker.url);
      const hdr = 'NATS/1.0\r\n\r\n';
      await conn.write(`CONNECT {"headers":false}\r\nHPUB a ${hdr.length} ${hdr.length}\r\n${hdr}\r\n`);
      await conn.expect(/^-ERR '[^']*headers[^']*'\r\n/);
      await conn.closed;
    } finally {
      await broker.stop();
    }
  });

  it('closes a slow consumer instead of buffering without bound', async () => {
    const broker = await startEmbeddedBroker({ maxPendingBytes: 256 * 1024 });
    try {
      const { conn } = await RawConn.open(broker.url);
      // Pause reading so the broker's output to this client piles up.
      await conn.write('CONNECT {}\r\nSUB big 1\r\nPING\r\n');
      await conn.expect(/^PONG\r\n/);
      conn.pause();
      const pub = await connect({ servers: broker.url });
      const chunk = new Uint8Array(512 * 1024);
      for (let i = 0; i < 64; i++) pub.publish('big', chunk);
      await pub.flush();
      await waitFor('slow consumer to be dropped', () => broker.stats().connections === 1, 10_000);
      await pub.close();
    } finally {
      await broker.stop();
    }
  });
});
