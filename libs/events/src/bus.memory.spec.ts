import { EventBusError } from './event-bus';
import { InMemoryEventHub, createInMemoryEventBus } from './memory-bus';
import { Topics } from './topics';
import { busContract, stateChange } from './__tests__/bus-contract';
import { recordingLogger } from './__tests__/helpers';

describe('InMemoryEventBus', () => {
  describe('bus contract', () => {
    busContract(async () => {
      const hub = new InMemoryEventHub();
      return {
        connect: async (logger, namespace) => hub.connect({ logger, namespace }),
        publishRaw: async (subject, data) => hub.injectRaw(subject, data),
        stop: async () => undefined,
      };
    });
  });

  it('flush waits until handlers, and what they publish in turn, are done', async () => {
    const bus = createInMemoryEventBus({ logger: recordingLogger() });
    const seen: string[] = [];
    bus.subscribe(Topics.workloadState, async (m) => {
      await new Promise((r) => setTimeout(r, 5));
      seen.push(m.workloadId);
      if (m.workloadId === 'first') bus.publish(Topics.workloadState, 'second', stateChange('second', 2));
    });
    bus.publish(Topics.workloadState, 'first', stateChange('first', 1));
    expect(seen).toEqual([]); // delivery is asynchronous, like a network bus
    await bus.flush();
    expect(seen).toEqual(['first', 'second']);
  });

  it('simulates connection loss for status listeners', async () => {
    const bus = createInMemoryEventBus({ logger: recordingLogger() });
    const statuses: string[] = [];
    bus.onStatus((s) => statuses.push(s));
    bus.simulateStatus('disconnected');
    expect(bus.status).toBe('disconnected');
    bus.simulateStatus('reconnecting');
    bus.simulateStatus('connected');
    await bus.close();
    expect(statuses).toEqual(['disconnected', 'reconnecting', 'connected', 'closed']);
    expect(() => bus.simulateStatus('connected')).toThrow(EventBusError);
  });

  it('close drops messages not yet handled', async () => {
    const bus = createInMemoryEventBus({ logger: recordingLogger() });
    const seen: number[] = [];
    const sub = bus.subscribe(Topics.workloadState, (m) => void seen.push(m.seq));
    for (let i = 1; i <= 5; i++) bus.publish(Topics.workloadState, 'w', stateChange('w', i));
    await bus.close();
    await sub.closed;
    expect(seen).toEqual([]);
  });

  it('rejects raw bytes on an invalid subject', () => {
    const hub = new InMemoryEventHub();
    expect(() => hub.injectRaw('corral.hosts.*.heartbeat', new Uint8Array())).toThrow(RangeError);
  });
});
