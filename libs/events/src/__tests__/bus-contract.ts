// The behaviour every EventBus implementation must have, as one table of
// tests. It runs against the NATS bus on the embedded broker, on a real
// nats-server (when NATS_URL is set) and against the in-memory bus, so the
// three cannot drift apart. Keys are unique per run because a real server
// may be shared with other test processes.

import { HostHeartbeat, InstanceState, WorkloadStateChanged } from '@corral/proto';
import { EventBusError, type BusLogger, type BusStatus, type EventBus } from '../event-bus';
import { InvalidSubjectTokenError, Subjects } from '../subjects';
import { Topics } from '../topics';
import { recordingLogger, sleep, uniqueId, waitFor } from './helpers';

export interface BusFixture {
  /**
   * A new bus on the system under test; a separate connection where the
   * transport has them. `namespace` as in EventBusOptions.
   */
  connect(logger: BusLogger, namespace?: string): Promise<EventBus>;
  /** Publishes bytes on a subject without going through a bus. */
  publishRaw(subject: string, data: Uint8Array): Promise<void>;
  stop(): Promise<void>;
}

export function heartbeat(hostId: string, seq: number, bootId = 'boot-1'): HostHeartbeat {
  return HostHeartbeat.fromPartial({
    hostId,
    bootId,
    seq,
    sentAt: new Date(1_700_000_000_000 + seq * 1000),
    capacity: { cpuMillis: 4000, memoryMb: 8192, diskMb: 100_000 },
    usage: { cpuMillis: 250, memoryMb: 512, diskMb: 1000 },
    drivers: [{ name: 'podman', healthy: true, version: '4.3.1', detail: '' }],
    workloads: [{ workloadId: 'w-1', state: InstanceState.INSTANCE_STATE_RUNNING }],
  });
}

export function stateChange(workloadId: string, seq: number): WorkloadStateChanged {
  return WorkloadStateChanged.fromPartial({
    workloadId,
    hostId: 'h-1',
    seq,
    state: InstanceState.INSTANCE_STATE_RUNNING,
    at: new Date(1_700_000_000_000 + seq),
  });
}

/** Defines the contract tests in the enclosing describe block. */
export function busContract(makeFixture: () => Promise<BusFixture>): void {
  let fixture: BusFixture;
  let open: EventBus[] = [];
  let log: ReturnType<typeof recordingLogger>;

  const connect = async (namespace?: string): Promise<EventBus> => {
    const bus = await fixture.connect(log, namespace);
    open.push(bus);
    return bus;
  };

  beforeAll(async () => {
    fixture = await makeFixture();
  });
  afterAll(async () => {
    await fixture?.stop();
  });
  beforeEach(() => {
    log = recordingLogger();
  });
  afterEach(async () => {
    await Promise.all(open.map((b) => b.close()));
    open = [];
  });

  it('delivers a published message decoded, with its subject and key', async () => {
    const [pub, sub] = [await connect(), await connect()];
    const host = uniqueId('host');
    const got: Array<{ msg: HostHeartbeat; subject: string; key: string }> = [];
    sub.subscribe(Topics.hostHeartbeat, (msg, d) => void got.push({ msg, ...d }), { key: host });
    await sub.flush();

    const sent = heartbeat(host, 7);
    pub.publish(Topics.hostHeartbeat, host, sent);
    await pub.flush();

    await waitFor('the heartbeat', () => got.length === 1);
    expect(got[0].msg).toEqual(sent);
    expect(got[0].subject).toBe(`corral.hosts.${host}.heartbeat`);
    expect(got[0].key).toBe(host);
  });

  it('a wildcard subscription gets every key of its topic and nothing of other topics', async () => {
    const bus = await connect();
    const run = uniqueId('run');
    const hosts = [`${run}-a`, `${run}-b`, `${run}-c`];
    const keys: string[] = [];
    // The shared server may carry other runs' heartbeats: keep ours.
    bus.subscribe(Topics.hostHeartbeat, (_m, d) => {
      if (d.key.startsWith(run)) keys.push(d.key);
    });
    await bus.flush();

    bus.publish(Topics.workloadState, `${run}-w`, stateChange(`${run}-w`, 1));
    for (const h of hosts) bus.publish(Topics.hostHeartbeat, h, heartbeat(h, 1));
    await bus.flush();

    await waitFor('three heartbeats', () => keys.length === 3);
    await sleep(50);
    expect(keys.sort()).toEqual(hosts);
  });

  it('a keyed subscription gets only that key', async () => {
    const bus = await connect();
    const run = uniqueId('run');
    const seen: string[] = [];
    bus.subscribe(Topics.workloadState, (m) => void seen.push(m.workloadId), { key: `${run}-mine` });
    await bus.flush();
    bus.publish(Topics.workloadState, `${run}-other`, stateChange(`${run}-other`, 1));
    bus.publish(Topics.workloadState, `${run}-mine`, stateChange(`${run}-mine`, 2));
    await bus.flush();
    await waitFor('the keyed message', () => seen.length === 1);
    await sleep(50);
    expect(seen).toEqual([`${run}-mine`]);
  });

  it('a queue group gets each message once while a plain subscriber gets all', async () => {
    const [a, b, c, pub] = [await connect(), await connect(), await connect(), await connect()];
    const host = uniqueId('host');
    const queue = uniqueId('replicas');
    const byA: number[] = [];
    const byB: number[] = [];
    const byPlain: number[] = [];
    a.subscribe(Topics.hostHeartbeat, (m) => void byA.push(m.seq), { key: host, queue });
    b.subscribe(Topics.hostHeartbeat, (m) => void byB.push(m.seq), { key: host, queue });
    c.subscribe(Topics.hostHeartbeat, (m) => void byPlain.push(m.seq), { key: host });
    await Promise.all([a.flush(), b.flush(), c.flush()]);

    const n = 60;
    for (let i = 1; i <= n; i++) pub.publish(Topics.hostHeartbeat, host, heartbeat(host, i));
    await pub.flush();

    await waitFor('every message once in the group', () => byA.length + byB.length === n && byPlain.length === n);
    await sleep(50);
    expect([...byA, ...byB].sort((x, y) => x - y)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(byPlain).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  });

  it('handles the messages of a subscription one at a time, in order', async () => {
    const bus = await connect();
    const wl = uniqueId('wl');
    const seen: number[] = [];
    let running = 0;
    let overlapped = false;
    bus.subscribe(
      Topics.workloadState,
      async (m) => {
        running++;
        if (running > 1) overlapped = true;
        // Yield to the event loop so an overlapping call would show.
        await sleep(m.seq % 5 === 0 ? 2 : 0);
        seen.push(m.seq);
        running--;
      },
      { key: wl },
    );
    await bus.flush();
    const n = 200;
    for (let i = 1; i <= n; i++) bus.publish(Topics.workloadState, wl, stateChange(wl, i));
    await bus.flush();
    await waitFor('all state changes', () => seen.length === n, 10_000);
    expect(seen).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(overlapped).toBe(false);
  });

  it('logs a failing handler and keeps consuming', async () => {
    const bus = await connect();
    const wl = uniqueId('wl');
    const seen: number[] = [];
    bus.subscribe(
      Topics.workloadState,
      async (m) => {
        if (m.seq === 2) throw new Error('boom in handler');
        if (m.seq === 3) await Promise.reject(new Error('async boom'));
        seen.push(m.seq);
      },
      { key: wl },
    );
    await bus.flush();
    for (const s of [1, 2, 3, 4]) bus.publish(Topics.workloadState, wl, stateChange(wl, s));
    await bus.flush();
    await waitFor('messages after the failures', () => seen.includes(4));
    expect(seen).toEqual([1, 4]);
    const errors = log.entries.filter((e) => e.level === 'error' && e.message === 'event handler failed');
    expect(errors.map((e) => e.meta?.['error'])).toEqual(['boom in handler', 'async boom']);
  });

  it('skips and logs a message that does not decode, then goes on', async () => {
    const bus = await connect();
    const wl = uniqueId('wl');
    const seen: number[] = [];
    bus.subscribe(Topics.workloadState, (m) => void seen.push(m.seq), { key: wl });
    await bus.flush();
    // Field 1 (workload_id), length-delimited, claiming 100 bytes that are not there.
    await fixture.publishRaw(Subjects.workloadState.subject(wl), Uint8Array.from([0x0a, 0x64, 0x41]));
    await sleep(20);
    bus.publish(Topics.workloadState, wl, stateChange(wl, 9));
    await bus.flush();
    await waitFor('the good message', () => seen.length === 1);
    expect(seen).toEqual([9]);
    expect(log.entries).toContainEqual(
      expect.objectContaining({ level: 'warn', message: 'undecodable event skipped' }),
    );
  });

  it('drops a received message whose body names another key than its subject', async () => {
    const bus = await connect();
    const host = uniqueId('host');
    const seen: string[] = [];
    bus.subscribe(Topics.hostHeartbeat, (m) => void seen.push(m.hostId), { key: host });
    await bus.flush();
    const forged = HostHeartbeat.encode(heartbeat('someone-else', 1)).finish();
    await fixture.publishRaw(Subjects.hostHeartbeat.subject(host), forged);
    await sleep(20);
    bus.publish(Topics.hostHeartbeat, host, heartbeat(host, 2));
    await bus.flush();
    await waitFor('the genuine heartbeat', () => seen.length === 1);
    expect(seen).toEqual([host]);
    expect(log.entries).toContainEqual(
      expect.objectContaining({ level: 'warn', message: 'event whose body names another key skipped' }),
    );
  });

  it('refuses to publish under a bad key or a key the message does not name', async () => {
    const bus = await connect();
    expect(() => bus.publish(Topics.hostHeartbeat, 'a.b', heartbeat('a.b', 1))).toThrow(InvalidSubjectTokenError);
    expect(() => bus.publish(Topics.hostHeartbeat, '*', heartbeat('*', 1))).toThrow(InvalidSubjectTokenError);
    let err: unknown;
    try {
      bus.publish(Topics.hostHeartbeat, 'h-1', heartbeat('h-2', 1));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(EventBusError);
    expect((err as EventBusError).code).toBe('KEY_MISMATCH');
    expect(() => bus.subscribe(Topics.hostHeartbeat, () => undefined, { queue: 'has space' })).toThrow(
      InvalidSubjectTokenError,
    );
  });

  it('stops delivering after unsubscribe and resolves closed', async () => {
    const bus = await connect();
    const wl = uniqueId('wl');
    const seen: number[] = [];
    const sub = bus.subscribe(Topics.workloadState, (m) => void seen.push(m.seq), { key: wl });
    expect(sub.subject).toBe(`corral.workloads.${wl}.state`);
    await bus.flush();
    bus.publish(Topics.workloadState, wl, stateChange(wl, 1));
    await bus.flush();
    await waitFor('first message', () => seen.length === 1);
    sub.unsubscribe();
    await sub.closed;
    bus.publish(Topics.workloadState, wl, stateChange(wl, 2));
    await bus.flush();
    await sleep(50);
    expect(seen).toEqual([1]);
  });

  it('drain handles what was received, then reports closed and refuses use', async () => {
    const pub = await connect();
    const bus = await connect();
    const wl = uniqueId('wl');
    const statuses: BusStatus[] = [];
    bus.onStatus((s) => statuses.push(s));
    const seen: number[] = [];
    bus.subscribe(
      Topics.workloadState,
      async (m) => {
        await sleep(1);
        seen.push(m.seq);
      },
      { key: wl },
    );
    await bus.flush();
    for (let i = 1; i <= 20; i++) pub.publish(Topics.workloadState, wl, stateChange(wl, i));
    await pub.flush();
    await waitFor('the first message', () => seen.length > 0);
    await bus.drain();
    expect(bus.status).toBe('closed');
    // Everything the subscription had received was handled, in order.
    expect(seen).toEqual(Array.from({ length: seen.length }, (_, i) => i + 1));
    expect(statuses).toContain('closed');
    expect(() => bus.publish(Topics.workloadState, wl, stateChange(wl, 99))).toThrow(EventBusError);
    await expect(bus.flush()).rejects.toThrow(EventBusError);
    await bus.close(); // idempotent
  });

  describe('subject namespaces', () => {
    it('buses in different namespaces, or none, do not hear each other; the same namespace does', async () => {
      const [nsBlue, nsGreen] = [uniqueId('blue'), uniqueId('green')];
      const buses = {
        blue: await connect(nsBlue),
        blueToo: await connect(nsBlue),
        green: await connect(nsGreen),
        bare: await connect(),
      };
      const host = uniqueId('host');
      const heard: Record<keyof typeof buses, number[]> = { blue: [], blueToo: [], green: [], bare: [] };
      for (const [name, bus] of Object.entries(buses) as Array<[keyof typeof buses, EventBus]>) {
        bus.subscribe(Topics.hostHeartbeat, (m) => void heard[name].push(m.seq), { key: host });
      }
      await Promise.all(Object.values(buses).map((b) => b.flush()));

      buses.blue.publish(Topics.hostHeartbeat, host, heartbeat(host, 1));
      buses.green.publish(Topics.hostHeartbeat, host, heartbeat(host, 2));
      buses.bare.publish(Topics.hostHeartbeat, host, heartbeat(host, 3));
      await Promise.all(Object.values(buses).map((b) => b.flush()));

      await waitFor('each namespace its own message', () => Object.values(heard).every((h) => h.length >= 1));
      await sleep(50);
      expect(heard).toEqual({ blue: [1], blueToo: [1], green: [2], bare: [3] });
    });

    it('wildcard and queue subscriptions work inside a namespace and handlers see the logical subject', async () => {
      const ns = uniqueId('ns');
      const [a, b, pub] = [await connect(ns), await connect(ns), await connect(ns)];
      const run = uniqueId('run');
      const hosts = [`${run}-a`, `${run}-b`];
      const wildcard: Array<{ key: string; subject: string }> = [];
      const queued: string[] = [];
      a.subscribe(Topics.hostHeartbeat, (_m, d) => void wildcard.push({ key: d.key, subject: d.subject }));
      a.subscribe(Topics.hostHeartbeat, (_m, d) => void queued.push(d.key), { queue: 'replicas' });
      b.subscribe(Topics.hostHeartbeat, (_m, d) => void queued.push(d.key), { queue: 'replicas' });
      await Promise.all([a.flush(), b.flush()]);

      for (const h of hosts) pub.publish(Topics.hostHeartbeat, h, heartbeat(h, 1));
      await pub.flush();

      await waitFor('both heartbeats', () => wildcard.length === 2 && queued.length === 2);
      await sleep(50);
      expect(wildcard.map((w) => w.key).sort()).toEqual(hosts);
      expect(wildcard.map((w) => w.subject).sort()).toEqual(hosts.map((h) => `corral.hosts.${h}.heartbeat`));
      expect(queued.sort()).toEqual(hosts);
    });

    it('puts the namespace on the wire as the first subject token', async () => {
      const ns = uniqueId('ns');
      const bus = await connect(ns);
      const wl = uniqueId('wl');
      const seen: number[] = [];
      bus.subscribe(Topics.workloadState, (m) => void seen.push(m.seq), { key: wl });
      await bus.flush();
      // Bare subject: not ours. Prefixed subject: ours.
      await fixture.publishRaw(`corral.workloads.${wl}.state`, Topics.workloadState.codec.encode(stateChange(wl, 1)));
      await fixture.publishRaw(`${ns}.corral.workloads.${wl}.state`, Topics.workloadState.codec.encode(stateChange(wl, 2)));
      await waitFor('the prefixed message', () => seen.length === 1);
      await sleep(50);
      expect(seen).toEqual([2]);
    });

    it('refuses a namespace that is not one subject token', async () => {
      for (const bad of ['a.b', 'ns*', '>', 'with space']) {
        await expect(fixture.connect(log, bad)).rejects.toThrow(InvalidSubjectTokenError);
      }
    });
  });

  it('reports closed to status listeners and lets a listener unregister', async () => {
    const bus = await connect();
    expect(bus.status).toBe('connected');
    const kept: BusStatus[] = [];
    const dropped: BusStatus[] = [];
    bus.onStatus((s) => kept.push(s));
    const off = bus.onStatus((s) => dropped.push(s));
    bus.onStatus(() => {
      throw new Error('listener bug');
    });
    off();
    await bus.close();
    expect(bus.status).toBe('closed');
    expect(kept).toEqual(['closed']);
    expect(dropped).toEqual([]);
    expect(log.entries).toContainEqual(
      expect.objectContaining({ level: 'error', message: 'event bus status listener failed' }),
    );
  });
}
