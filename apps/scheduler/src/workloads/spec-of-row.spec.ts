import type { Workload as WorkloadRow } from '@corral/db';
import { specOfRow } from './workload-store';

// The stored spec of a workload as a create would have it: what a migration
// starts the replacement with and a restore starts the copy with.

const row = {
  id: 'w-1',
  name: 'web',
  driver: 'process',
  command: ['/bin/sleep', '60'],
  env: { MODE: 'test' },
  image: null,
  resources: {},
  routes: [],
  vm: null,
} as unknown as WorkloadRow;

describe('specOfRow', () => {
  it('gives back the spec the workload was created with, empty stored values left out', () => {
    expect(specOfRow(row)).toMatchObject({ name: 'web', driver: 'process', command: ['/bin/sleep', '60'], env: { MODE: 'test' } });
    expect(specOfRow(row).resources).toBeUndefined();
  });

  it('validates again like a create (a restore under a bad name is refused)', () => {
    expect(specOfRow({ ...row, name: 'web-restored' }).name).toBe('web-restored');
    expect(() => specOfRow({ ...row, name: 'Not A Name' })).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', field: 'name' }));
  });
});
