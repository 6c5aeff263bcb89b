// Connection loss and recovery of the NATS bus, driven by stopping and
// restarting an embedded broker on the same port.

import { backoffDelay, connectEventBus } from './bus';
import { startEmbeddedBroker, type EmbeddedBroker } from './embedded';
import type { BusStatus, EventBus } from './event-bus';
import { Topics } from './topics';
import { stateChange } from './__tests__/bus-contract';
import { recordingLogger, waitFor } from './__tests__/helpers';

const fast = { minDelayMs: 20, maxDelayMs: 100 };

describe('NATS event bus connection status', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });
  const track = <T extends EventBus | EmbeddedBroker>(x: T): T => {
    cleanup.push(async () => ('close' in x ? x.close() : x.stop()));
    return x;
  };

  it('reports disconnected, reconnecting and connected, and resumes subscriptions', async () => {
    const first = await startEmbeddedBroker();
    const port = first.port;
    const log = recordingLogger();
    const bus = track(await connectEventBus({ url: first.url, name: 'reconnect-test', logger: log, reconnect: fast }));
    const statuses: BusStatus[] = [];
    bus.onStatus((s) => statuses.push(s));
    const seen: number[] = [];
    bus.subscribe(Topics.workloadState, (m) => void seen.push(m.seq), { key: 'w-1' });
    await bus.flush();

    await first.stop();
    await waitFor('disconnected and retrying', () => statuses.includes('disconnected') && statuses.includes('reconnecting'));
    expect(bus.status).not.toBe('connected');

    const second = track(await startEmbeddedBroker({ port }));
    await waitFor('reconnected', () => bus.status === 'connected', 10_000);
    expect(statuses.indexOf('disconnected')).toBeLessThan(statuses.lastIndexOf('connected'));
    await bus.flush();

    // The client re-sent its SUB to the new server: delivery works again.
    const pub = track(await connectEventBus({ url: second.url, name: 'reconnect-pub', logger: log }));
    pub.publish(Topics.workloadState, 'w-1', stateChange('w-1', 5));
    await pub.flush();
    await waitFor('delivery after reconnect', () => seen.includes(5));
    expect(log.entries).toContainEqual(expect.objectContaining({ level: 'warn', message: 'disconnected from NATS' }));
    expect(log.entries).toContainEqual(expect.objectContaining({ level: 'info', message: 'reconnected to NATS' }));
  });

  it('fails fast when the first connection is refused', async () => {
    const probe = await startEmbeddedBroker();
    const url = probe.url;
    await probe.stop();
    await expect(connectEventBus({ url, name: 'refused', logger: recordingLogger() })).rejects.toThrow();
  });

  it('waits for the server when asked to', async () => {
    const probe = await startEmbeddedBroker();
    const { url, port } = probe;
    await probe.stop();
    const connecting = connectEventBus({ url, name: 'patient', logger: recordingLogger(), waitForFirstConnect: true, reconnect: fast });
    await new Promise((r) => setTimeout(r, 150));
    track(await startEmbeddedBroker({ port }));
    const bus = track(await connecting);
    expect(bus.status).toBe('connected');
  });
});

describe('backoffDelay', () => {
  const mid = () => 0.5; // no jitter

  it('starts at the minimum and grows with the time spent disconnected up to the maximum', () => {
    const b = { minDelayMs: 250, maxDelayMs: 10_000 };
    expect(backoffDelay(0, b, mid)).toBe(250);
    expect(backoffDelay(2_000, b, mid)).toBe(1_000);
    expect(backoffDelay(8_000, b, mid)).toBe(4_000);
    expect(backoffDelay(3_600_000, b, mid)).toBe(10_000);
  });

  it('jitters by at most 20%', () => {
    expect(backoffDelay(4_000, {}, () => 0)).toBe(1_600);
    expect(backoffDelay(4_000, {}, () => 0.999999)).toBe(2_400);
  });

  it('never goes below the minimum when the maximum is smaller', () => {
    expect(backoffDelay(1_000_000, { minDelayMs: 500, maxDelayMs: 100 }, mid)).toBe(500);
  });
});
