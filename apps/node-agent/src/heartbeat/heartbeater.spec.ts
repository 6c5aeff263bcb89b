import type { Topic } from '@corral/events';
import { silentLogger } from '@corral/logging';
import { InstanceState, type HostHeartbeat } from '@corral/proto';
import { eventually } from '@corral/testing';
import { startHeartbeats, type HeartbeatBody } from './heartbeater';

describe('startHeartbeats', () => {
  const body: HeartbeatBody = {
    capacity: { cpuMillis: 2000, memoryMb: 4096, diskMb: 10_000 },
    usage: { cpuMillis: 100, memoryMb: 1000, diskMb: 500 },
    drivers: [{ name: 'process', healthy: true, version: '6.1', detail: '' }],
    workloads: [{ workloadId: 'w1', state: InstanceState.INSTANCE_STATE_RUNNING }],
    agentAddress: '127.0.0.1:50060',
  };
  const recorder = () => {
    const sent: Array<{ topic: string; key: string; hb: HostHeartbeat }> = [];
    return {
      sent,
      bus: {
        publish<T>(topic: Topic<T>, key: string, message: T) {
          sent.push({ topic: topic.name, key, hb: message as unknown as HostHeartbeat });
        },
      },
    };
  };

  it('beats at once and then on the interval, seq +1 per beat, one boot id', async () => {
    const { sent, bus } = recorder();
    const hb = startHeartbeats({ bus, hostId: 'h1', intervalMs: 20, collect: async () => body, logger: silentLogger, hostToken: () => 'jwt-1' });
    await eventually(() => (sent.length >= 4 ? true : undefined), { timeoutMs: 2000 });
    await hb.stop();
    const count = sent.length;
    expect(sent.map((s) => s.hb.seq)).toEqual(sent.map((_, i) => i + 1));
    expect(new Set(sent.map((s) => s.hb.bootId))).toEqual(new Set([hb.bootId]));
    expect(sent[0]).toMatchObject({ topic: 'hostHeartbeat', key: 'h1', hb: { ...body, hostId: 'h1', sentAt: expect.any(Date), hostToken: 'jwt-1' } });
    await new Promise((r) => setTimeout(r, 60));
    expect(sent).toHaveLength(count);
  });

  it('carries the token current at each beat (it is refreshed while the agent runs)', async () => {
    const { sent, bus } = recorder();
    let token = 'jwt-old';
    const hb = startHeartbeats({ bus, hostId: 'h1', intervalMs: 20, collect: async () => body, logger: silentLogger, hostToken: () => token });
    await eventually(() => (sent.length >= 1 ? true : undefined), { timeoutMs: 2000 });
    token = 'jwt-new';
    await eventually(() => (sent.at(-1)?.hb.hostToken === 'jwt-new' ? true : undefined), { timeoutMs: 2000 });
    await hb.stop();
    expect(sent[0].hb.hostToken).toBe('jwt-old');
  });

  it('a new start is a new boot whose seq starts again at 1', async () => {
    const a = recorder();
    const b = recorder();
    const first = startHeartbeats({ bus: a.bus, hostId: 'h1', intervalMs: 1000, collect: async () => body, logger: silentLogger, hostToken: () => 'jwt-1' });
    const second = startHeartbeats({ bus: b.bus, hostId: 'h1', intervalMs: 1000, collect: async () => body, logger: silentLogger, hostToken: () => 'jwt-1' });
    await eventually(() => (a.sent.length && b.sent.length ? true : undefined));
    await Promise.all([first.stop(), second.stop()]);
    expect(first.bootId).not.toBe(second.bootId);
    expect(b.sent[0].hb.seq).toBe(1);
  });

  it('never overlaps beats and survives a failing collection', async () => {
    const { sent, bus } = recorder();
    let running = 0;
    let maxRunning = 0;
    let calls = 0;
    const collect = async () => {
      calls += 1;
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setTimeout(r, 30));
      running -= 1;
      if (calls === 2) throw new Error('statfs failed');
      return body;
    };
    const hb = startHeartbeats({ bus, hostId: 'h1', intervalMs: 5, collect, logger: silentLogger, hostToken: () => 'jwt-1' });
    await eventually(() => (sent.length >= 3 ? true : undefined), { timeoutMs: 2000 });
    await hb.stop();
    expect(maxRunning).toBe(1);
    // The failed beat is skipped without burning a seq number.
    expect(sent.slice(0, 3).map((s) => s.hb.seq)).toEqual([1, 2, 3]);
  });
});
