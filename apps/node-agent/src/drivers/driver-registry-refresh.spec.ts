import { silentLogger } from '@corral/logging';
import type { DriverFingerprint } from './driver';
import { DriverRegistry } from './driver-registry';
import { FakeDriver } from './fake/fake-driver';

// Heartbeats take fingerprints from currentFingerprints(): a stale set is
// refreshed in the background, so a driver probe that blocks (podman waiting
// on its storage lock) never delays a heartbeat.

function deferred<T>() {
  let resolve: (value: T) => void = () => undefined;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('DriverRegistry.currentFingerprints', () => {
  it('answers with what it has while a stale set is probed again, then with the new probe', async () => {
    const fake = new FakeDriver({ name: 'podman' });
    const probes: Array<ReturnType<typeof deferred<DriverFingerprint>>> = [];
    fake.fingerprint = () => {
      const probe = deferred<DriverFingerprint>();
      probes.push(probe);
      return probe.promise;
    };
    const registry = new DriverRegistry(silentLogger).register(fake);

    // Nothing probed yet: the first call waits for the probe.
    const first = registry.currentFingerprints(0);
    probes[0].resolve({ name: 'podman', healthy: true, version: '1', detail: '' });
    expect(await first).toEqual([{ name: 'podman', healthy: true, version: '1', detail: '' }]);

    // Stale (max age 0): answered at once with the old set, while one new probe runs, shared by every caller.
    expect(await registry.currentFingerprints(0)).toEqual([expect.objectContaining({ healthy: true })]);
    expect(await registry.currentFingerprints(0)).toEqual([expect.objectContaining({ healthy: true })]);
    expect(probes).toHaveLength(2);

    probes[1].resolve({ name: 'podman', healthy: false, version: '', detail: 'storage is locked' });
    await probes[1].promise;
    // The probe's result is stored once it settles; the next call has it.
    await new Promise((r) => setImmediate(r));
    expect(await registry.currentFingerprints(60_000)).toEqual([{ name: 'podman', healthy: false, version: '', detail: 'storage is locked' }]);
    expect(probes).toHaveLength(2);
  });

  it('fingerprints(0) still waits for a fresh probe (registration and the Fingerprint RPC)', async () => {
    const fake = new FakeDriver({ name: 'podman' });
    let n = 0;
    fake.fingerprint = async () => ({ name: 'podman', healthy: true, version: String(++n), detail: '' });
    const registry = new DriverRegistry(silentLogger).register(fake);
    expect((await registry.fingerprints(0))[0].version).toBe('1');
    expect((await registry.fingerprints(0))[0].version).toBe('2');
  });
});
