import { validateWorkloadSpec, workloadExtrasFromWire, workloadExtrasToWire, type WorkloadSpecInput } from './workload-spec';

const ok = { name: 'web-1', driver: 'process', command: ['/bin/sh', '-c', 'echo hi'], env: { GREETING: 'hi' } };
const podman = { name: 'web', driver: 'podman', image: 'localhost/busybox:latest' };
const microvm = { name: 'vm', driver: 'qemu', vm: { mode: 'microvm', kernel: '/boot/vmlinuz' } };

describe('validateWorkloadSpec', () => {
  it('accepts a valid spec, normalised', () => {
    expect(validateWorkloadSpec(ok)).toEqual({ ...ok, routes: [] });
  });

  it('accepts and normalises image, resources, routes and vm', () => {
    const spec = validateWorkloadSpec({
      ...podman,
      resources: { vcpus: 2, memoryMb: 256 },
      routes: [
        { name: 'http', port: 8080 },
        { name: 'dns-udp', port: 53, protocol: 'udp' },
      ],
    });
    expect(spec).toEqual({
      name: 'web',
      driver: 'podman',
      command: [],
      env: {},
      image: 'localhost/busybox:latest',
      resources: { vcpus: 2, memoryMb: 256 },
      routes: [
        { name: 'http', port: 8080, protocol: 'tcp' },
        { name: 'dns-udp', port: 53, protocol: 'udp' },
      ],
    });
    expect(validateWorkloadSpec(microvm)).toMatchObject({ vm: { mode: 'microvm', kernel: '/boot/vmlinuz' } });
    expect(validateWorkloadSpec({ name: 'uk', driver: 'qemu', image: '/images/hello.img', vm: { mode: 'unikernel' } })).toMatchObject({
      image: '/images/hello.img',
      vm: { mode: 'unikernel' },
    });
    // Empty strings and an empty resources object mean "not given".
    expect(validateWorkloadSpec({ ...ok, image: '', resources: {} })).toEqual({ ...ok, routes: [] });
  });

  it.each<[WorkloadSpecInput, string]>([
    [{ ...ok, name: 'Web_1' }, 'name'],
    [{ ...ok, name: '' }, 'name'],
    [{ ...ok, driver: 'docker' }, 'driver'],
    [{ ...ok, command: [] }, 'command'],
    [{ name: 'x', driver: 'process' }, 'command'],
    [{ ...ok, command: [''] }, 'command[0]'],
    [{ ...ok, command: ['/bin/sh', 'a\0b'] }, 'command[1]'],
    [{ ...ok, env: { '1BAD': 'x' } }, 'env.1BAD'],
    [{ ...ok, env: { OK: 'x'.repeat(40000) } }, 'env.OK'],
    // image
    [{ name: 'web', driver: 'podman' }, 'image'],
    [{ ...podman, image: '--privileged' }, 'image'],
    [{ ...podman, image: 'a b' }, 'image'],
    [{ ...podman, image: 'x'.repeat(1025) }, 'image'],
    [{ ...ok, image: 'busybox' }, 'image'],
    [{ name: 'uk', driver: 'qemu', vm: { mode: 'unikernel' } }, 'image'],
    [{ ...microvm, image: 'busybox' }, 'image'],
    // vm
    [{ name: 'vm', driver: 'qemu' }, 'vm.mode'],
    [{ name: 'vm', driver: 'qemu', vm: { mode: 'container' } }, 'vm.mode'],
    [{ name: 'vm', driver: 'qemu', vm: { mode: 'microvm' } }, 'vm.kernel'],
    [{ name: 'vm', driver: 'qemu', vm: { mode: 'microvm', kernel: '' } }, 'vm.kernel'],
    [{ ...microvm, vm: { ...microvm.vm, initrd: 'a\0b' } }, 'vm.initrd'],
    [{ ...microvm, vm: { ...microvm.vm, kernelArgs: 'x'.repeat(5000) } }, 'vm.kernelArgs'],
    [{ ...podman, vm: { mode: 'microvm', kernel: '/k' } }, 'vm'],
    // resources
    [{ ...podman, resources: { vcpus: 0 } }, 'resources.vcpus'],
    [{ ...podman, resources: { vcpus: 1.5 } }, 'resources.vcpus'],
    [{ ...podman, resources: { vcpus: 65 } }, 'resources.vcpus'],
    [{ ...podman, resources: { memoryMb: 15 } }, 'resources.memoryMb'],
    [{ ...podman, resources: { memoryMb: 2 * 1024 * 1024 } }, 'resources.memoryMb'],
    // routes
    [{ ...ok, routes: [{ name: 'http', port: 8080 }, { name: 'admin', port: 0 }] }, 'routes[1].port'],
    [{ ...ok, routes: [{ name: 'http', port: 65536 }] }, 'routes[0].port'],
    [{ ...ok, routes: [{ name: 'http', port: 80.5 }] }, 'routes[0].port'],
    [{ ...ok, routes: [{ name: 'Http', port: 80 }] }, 'routes[0].name'],
    [{ ...ok, routes: [{ name: '1http', port: 80 }] }, 'routes[0].name'],
    [{ ...ok, routes: [{ name: 'a'.repeat(33), port: 80 }] }, 'routes[0].name'],
    [{ ...ok, routes: [{ name: 'http', port: 80 }, { name: 'http', port: 81 }] }, 'routes[1].name'],
    [{ ...ok, routes: [{ name: 'http', port: 80, protocol: 'sctp' }] }, 'routes[0].protocol'],
    [{ ...ok, routes: Array.from({ length: 33 }, (_, i) => ({ name: `r${i}`, port: 1000 + i })) }, 'routes'],
  ])('refuses %j naming field %s', (input, field) => {
    expect(() => validateWorkloadSpec(input)).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', field }));
  });

  it('accepts the edges of every range', () => {
    expect(() => validateWorkloadSpec({ ...podman, resources: { vcpus: 1, memoryMb: 16 } })).not.toThrow();
    expect(() => validateWorkloadSpec({ ...podman, resources: { vcpus: 64, memoryMb: 1024 * 1024 } })).not.toThrow();
    expect(() => validateWorkloadSpec({ ...ok, routes: [{ name: 'a', port: 1 }, { name: 'b'.repeat(32), port: 65535 }] })).not.toThrow();
  });
});

describe('wire conversion of the extras', () => {
  it("treats proto3's '' and 0 as not given", () => {
    expect(
      workloadExtrasFromWire({ image: '', resources: { vcpus: 0, memoryMb: 0 }, routes: [{ name: 'http', port: 80, protocol: '' }], vm: { mode: '', kernel: '', initrd: '', kernelArgs: '' } }),
    ).toEqual({ routes: [{ name: 'http', port: 80, protocol: 'tcp' }] });
  });

  it('round-trips a validated spec', () => {
    const spec = validateWorkloadSpec({ ...microvm, resources: { memoryMb: 256 }, routes: [{ name: 'ssh', port: 22 }] });
    const wire = workloadExtrasToWire(spec);
    expect(wire).toEqual({
      image: '',
      resources: { vcpus: 0, memoryMb: 256 },
      routes: [{ name: 'ssh', port: 22, protocol: 'tcp' }],
      vm: { mode: 'microvm', kernel: '/boot/vmlinuz', initrd: '', kernelArgs: '', rootDisk: '' },
    });
    expect(validateWorkloadSpec({ ...microvm, ...workloadExtrasFromWire(wire) })).toEqual(spec);
  });

  it('carries a microvm root disk base image, and refuses it elsewhere', () => {
    const spec = validateWorkloadSpec({ ...microvm, vm: { mode: 'microvm', kernel: '/boot/vmlinuz', rootDisk: '/images/base.qcow2' } });
    expect(spec.vm).toMatchObject({ rootDisk: '/images/base.qcow2' });
    const wire = workloadExtrasToWire(spec);
    expect(wire.vm?.rootDisk).toBe('/images/base.qcow2');
    expect(validateWorkloadSpec({ ...microvm, ...workloadExtrasFromWire(wire) })).toEqual(spec);
    expect(() => validateWorkloadSpec({ ...microvm, vm: { mode: 'microvm', kernel: '/boot/vmlinuz', rootDisk: 'relative.img' } })).toThrow(
      expect.objectContaining({ field: 'vm.rootDisk' }),
    );
    expect(() => validateWorkloadSpec({ name: 'u', driver: 'qemu', image: '/images/u.img', vm: { mode: 'unikernel', rootDisk: '/images/base.qcow2' } })).toThrow(
      expect.objectContaining({ field: 'vm.rootDisk' }),
    );
  });
});
