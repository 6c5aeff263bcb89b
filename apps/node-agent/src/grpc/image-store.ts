import { FailedPreconditionError, InvalidArgumentError } from '@corral/domain';
import type { DriverRegistry } from '../drivers/driver-registry';
import { PodmanDriver } from '../drivers/podman';

/** The podman driver for an image call (import, list, pull), or the reason there is none. */
export function imageStore(drivers: DriverRegistry, name: string): PodmanDriver {
  if (!name) throw new InvalidArgumentError('driver is required', { field: 'driver' });
  if (name === 'qemu') throw new FailedPreconditionError('driver qemu has no image store: VM images are files on the host', { field: 'driver' });
  const driver = drivers.get(name, 'driver');
  if (!(driver instanceof PodmanDriver)) throw new FailedPreconditionError(`driver ${name} has no image store`, { field: 'driver' });
  return driver;
}
