import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Topic } from '@corral/events';
import { silentLogger } from '@corral/logging';
import type { HostHeartbeat } from '@corral/proto';
import { eventually } from '@corral/testing';
import { loadNodeAgentConfig } from '../config';
import type { DriverFingerprint } from '../drivers/driver';
import { FakeDriver } from '../drivers/fake/fake-driver';
import { startNodeAgent, type RunningNodeAgent } from '../node-agent';

// Fingerprints are not a registration-time snapshot: a running agent probes
// its drivers again (at most every 30 s) and every heartbeat to host-registry
// carries the current ones with capacity and usage. Here a driver breaks
// while the agent runs, and the heartbeats say so without a restart.

describe('fingerprints refreshed while the agent runs', () => {
  jest.setTimeout(90_000);
  let stateDir: string;
  let agent: RunningNodeAgent;
  const heartbeats: HostHeartbeat[] = [];
  const bus = {
    publish<T>(topic: Topic<T>, _key: string, message: T) {
      if (topic.name === 'hostHeartbeat') heartbeats.push(message as unknown as HostHeartbeat);
    },
  };
  let podmanWorks = true;

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'corral-agent-fp-'));
    const podman = new FakeDriver({ name: 'podman' });
    podman.fingerprint = async (): Promise<DriverFingerprint> => {
      if (!podmanWorks) throw new Error('podman: command not found');
      return { name: 'podman', healthy: true, version: '5.4.2', detail: 'runtime runc' };
    };
    const config = loadNodeAgentConfig({ AGENT_GRPC_PORT: '0', AGENT_STATE_DIR: stateDir, AGENT_HEARTBEAT_INTERVAL_MS: '200', NATS_URL: 'nats://127.0.0.1:1' });
    agent = await startNodeAgent(config, { hostId: 'host-fp-test', bus, logger: silentLogger, drivers: [podman] });
  });

  afterAll(async () => {
    await agent?.stop();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('reports drivers, capacity and usage in heartbeats, and a driver that breaks as unhealthy without a restart', async () => {
    const first = await eventually(() => heartbeats[0], { what: 'a first heartbeat' });
    expect(first.drivers).toEqual([expect.objectContaining({ name: 'podman', healthy: true, version: '5.4.2' })]);
    expect(first.capacity).toMatchObject({ cpuMillis: expect.any(Number), memoryMb: expect.any(Number), diskMb: expect.any(Number) });
    expect(first.capacity?.memoryMb).toBeGreaterThan(0);
    expect(first.capacity?.diskMb).toBeGreaterThan(0);
    expect(first.usage?.diskMb).toBeGreaterThan(0);

    podmanWorks = false;
    const broken = await eventually(() => heartbeats.find((hb) => hb.drivers.some((d) => d.name === 'podman' && !d.healthy)), {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: 'a heartbeat with the refreshed fingerprint',
    });
    expect(broken.drivers).toEqual([{ name: 'podman', healthy: false, version: '', detail: 'fingerprint failed' }]);
    // The same agent process: its boot id did not change.
    expect(broken.bootId).toBe(first.bootId);
  });
});
