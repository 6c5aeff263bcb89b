import { eventsV1 } from '@corral/proto';
import { CredentialRefusalNotifier } from './credential-notices';
import { createInMemoryEventBus } from './memory-bus';
import { Topics } from './topics';
import { recordingLogger } from './__tests__/helpers';

describe('CredentialRefusalNotifier', () => {
  const setup = (known: (hostId: string) => Promise<boolean> = async () => true) => {
    const bus = createInMemoryEventBus({ logger: recordingLogger() });
    let now = new Date('2026-01-01T00:00:00Z');
    const lookups: string[] = [];
    const notifier = new CredentialRefusalNotifier({
      bus,
      refusedBy: 'host-registry',
      isKnownHost: (hostId) => {
        lookups.push(hostId);
        return known(hostId);
      },
      logger: recordingLogger(),
      minIntervalMs: 30_000,
      now: () => now,
    });
    const heard: eventsV1.CredentialRefused[] = [];
    bus.subscribe(Topics.credentialRefused, (m) => void heard.push(m));
    return { bus, notifier, heard, lookups, advance: (ms: number) => (now = new Date(now.getTime() + ms)) };
  };

  it("tells a known host's agent on its notices subject, once per interval", async () => {
    const { bus, notifier, heard, lookups, advance } = setup();
    expect(await notifier.refused('h-1', 'heartbeat')).toBe(true);
    expect(await notifier.refused('h-1', 'heartbeat')).toBe(false);
    advance(29_999);
    expect(await notifier.refused('h-1', 'workload-state')).toBe(false);
    advance(1);
    expect(await notifier.refused('h-1', 'workload-state')).toBe(true);
    expect(await notifier.refused('h-2', 'heartbeat')).toBe(true);
    await bus.flush();
    expect(heard.map((m) => [m.hostId, m.messageKind, m.refusedBy])).toEqual([
      ['h-1', eventsV1.RefusedMessageKind.REFUSED_MESSAGE_KIND_HEARTBEAT, 'host-registry'],
      ['h-1', eventsV1.RefusedMessageKind.REFUSED_MESSAGE_KIND_WORKLOAD_STATE, 'host-registry'],
      ['h-2', eventsV1.RefusedMessageKind.REFUSED_MESSAGE_KIND_HEARTBEAT, 'host-registry'],
    ]);
    expect(lookups).toEqual(['h-1', 'h-1', 'h-2']);
    expect(notifier.sent).toBe(3);
  });

  it('sends nothing for an unknown or deleted host, nor when the lookup fails, nor for an id that is no subject token', async () => {
    const { bus, notifier, heard } = setup(async (hostId) => {
      if (hostId === 'broken') throw new Error('database down');
      return hostId === 'known';
    });
    expect(await notifier.refused('deleted', 'heartbeat')).toBe(false);
    expect(await notifier.refused('broken', 'heartbeat')).toBe(false);
    expect(await notifier.refused('a.b', 'heartbeat')).toBe(false);
    expect(await notifier.refused('known', 'heartbeat')).toBe(true);
    await bus.flush();
    expect(heard.map((m) => m.hostId)).toEqual(['known']);
  });
});
