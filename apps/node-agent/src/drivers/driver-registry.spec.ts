import { silentLogger } from '@corral/logging';
import type { DriverFingerprint } from './driver';
import { DriverRegistry } from './driver-registry';
import { FakeDriver } from './fake/fake-driver';

describe('DriverRegistry', () => {
  it('tells unknown drivers (invalid argument) from unavailable ones (failed precondition)', () => {
    const registry = new DriverRegistry(silentLogger).register(new FakeDriver({ name: 'process' })).markUnavailable('qemu', 'no /dev/kvm');
    expect(registry.get('process').name).toBe('process');
    expect(() => registry.get('docker')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', field: 'spec.driver' }));
    expect(() => registry.get('qemu')).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('no /dev/kvm') }));
    expect(() => registry.get('podman')).toThrow(expect.objectContaining({ code: 'FAILED_PRECONDITION' }));
    expect(registry.find('qemu')).toBeUndefined();
  });

  it('caches fingerprints and reports a failing probe as unhealthy', async () => {
    const fake = new FakeDriver({ name: 'process' });
    let probes = 0;
    fake.fingerprint = async (): Promise<DriverFingerprint> => {
      probes += 1;
      if (probes > 1) throw new Error('podman: command not found');
      return { name: 'process', healthy: true, version: '1', detail: '' };
    };
    const registry = new DriverRegistry(silentLogger).register(fake).markUnavailable('qemu', 'disabled');
    const first = await registry.fingerprints();
    expect(first).toEqual([
      { name: 'process', healthy: true, version: '1', detail: '' },
      { name: 'qemu', healthy: false, version: '', detail: 'disabled' },
    ]);
    expect(await registry.fingerprints()).toBe(first);
    expect(probes).toBe(1);
    expect((await registry.fingerprints(0))[0]).toEqual({ name: 'process', healthy: false, version: '', detail: 'fingerprint failed' });
  });
});
