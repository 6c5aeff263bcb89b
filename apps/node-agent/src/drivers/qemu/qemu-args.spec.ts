import type { TaskSpec } from '../driver';
import {
  buildQemuArgs,
  checkSnapshotPath,
  kernelCommandLine,
  machineFromSpec,
  migrationReadUri,
  migrationWriteUri,
  netdevArg,
  qemuOptionValue,
  type VmMachine,
} from './qemu-args';

const files = { consoleLog: '/state/vm1/console.log', qmpSocket: '/state/vm1/qmp.sock', pidFile: '/state/vm1/qemu.pid' };
const defaults = { accelerator: 'tcg' as const, memoryMb: 256, vcpus: 1 };

const spec = (extra: Partial<TaskSpec> = {}): TaskSpec => ({
  workloadId: 'vm1',
  name: 'vm1',
  command: [],
  env: {},
  labels: {},
  vm: { mode: 'microvm', kernel: '/img/vmlinuz', initrd: '/img/initrd.gz', kernelArgs: 'console=ttyS0 quiet' },
  ...extra,
});

const machine = (extra: Partial<VmMachine> = {}): VmMachine => ({
  accelerator: 'tcg',
  machineType: 'q35',
  memoryMb: 256,
  vcpus: 1,
  boot: { mode: 'microvm', kernel: '/img/vmlinuz', initrd: '/img/initrd.gz', kernelArgs: 'console=ttyS0 panic=-1' },
  disks: [],
  ...extra,
});

/** The value following `flag` in argv (every occurrence). */
const valuesOf = (args: string[], flag: string) => args.flatMap((a, i) => (a === flag ? [args[i + 1]] : []));

describe('qemu argv', () => {
  it('boots a microVM directly from kernel and initrd with its command line as one argument', () => {
    const { machine: m, diskPaths } = machineFromSpec(spec(), defaults);
    const args = buildQemuArgs({ ...m, disks: [] }, files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' });
    expect(valuesOf(args, '-kernel')).toEqual(['/img/vmlinuz']);
    expect(valuesOf(args, '-initrd')).toEqual(['/img/initrd.gz']);
    expect(valuesOf(args, '-append')).toEqual(['panic=-1 console=ttyS0 quiet']);
    expect(diskPaths).toEqual([]);
    expect(valuesOf(args, '-drive')).toEqual([]);
  });

  it('sets memory, vcpus and the accelerator from the spec, else from the defaults', () => {
    const custom = machineFromSpec(spec({ resources: { memoryMb: 512, vcpus: 2 } }), defaults).machine;
    const args = buildQemuArgs({ ...custom, disks: [] }, files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' });
    expect(valuesOf(args, '-m')).toEqual(['512']);
    expect(valuesOf(args, '-smp')).toEqual(['2']);
    expect(valuesOf(args, '-accel')).toEqual(['tcg']);
    expect(valuesOf(args, '-machine')).toEqual(['q35']);
    expect(args).not.toContain('-cpu');

    const plain = machineFromSpec(spec(), { ...defaults, accelerator: 'kvm', memoryMb: 128, vcpus: 3 }).machine;
    const kvmArgs = buildQemuArgs({ ...plain, disks: [] }, files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' });
    expect(valuesOf(kvmArgs, '-m')).toEqual(['128']);
    expect(valuesOf(kvmArgs, '-smp')).toEqual(['3']);
    expect(valuesOf(kvmArgs, '-accel')).toEqual(['kvm']);
    expect(valuesOf(kvmArgs, '-cpu')).toEqual(['host']);
  });

  it('forwards each port from the host address to the guest over user networking', () => {
    const args = buildQemuArgs(machine(), files, {
      name: 'vm1',
      hostAddress: '127.0.0.1',
      ports: [
        { name: 'http', guestPort: 80, hostPort: 41000, protocol: 'tcp' },
        { name: 'dns', guestPort: 53, hostPort: 41001, protocol: 'udp' },
      ],
    });
    expect(valuesOf(args, '-netdev')).toEqual(['user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:41000-:80,hostfwd=udp:127.0.0.1:41001-:53']);
    expect(valuesOf(args, '-device')).toEqual(['virtio-net-pci,netdev=n0,romfile=']);
    expect(netdevArg([], '127.0.0.1')).toBe('user,id=n0,restrict=on');
  });

  it('keeps the guest from connecting out (and to the host loopback behind 10.0.2.2) unless egress is allowed', () => {
    const ports = [{ name: 'http', guestPort: 80, hostPort: 41000, protocol: 'tcp' as const }];
    expect(netdevArg(ports, '127.0.0.1', true)).toBe('user,id=n0,hostfwd=tcp:127.0.0.1:41000-:80');
    const args = buildQemuArgs(machine(), files, { name: 'vm1', ports, hostAddress: '0.0.0.0', egress: true });
    expect(valuesOf(args, '-netdev')).toEqual(['user,id=n0,hostfwd=tcp:0.0.0.0:41000-:80']);
  });

  it('rejects bad ports and duplicate forwards', () => {
    const bad = (ports: TaskSpec['ports']) => () => machineFromSpec(spec({ ports }), defaults);
    expect(bad([{ name: 'a', guestPort: 0, hostPort: 1, protocol: 'tcp' }])).toThrow(/guestPort/);
    expect(bad([{ name: 'a', guestPort: 80, hostPort: 70000, protocol: 'tcp' }])).toThrow(/hostPort/);
    expect(bad([{ name: 'a', guestPort: 80, hostPort: 1.5, protocol: 'tcp' }])).toThrow(/hostPort/);
    expect(bad([{ name: 'a', guestPort: 80, hostPort: 8080, protocol: 'sctp' as 'tcp' }])).toThrow(/protocol/);
    expect(
      bad([
        { name: 'a', guestPort: 80, hostPort: 8080, protocol: 'tcp' },
        { name: 'b', guestPort: 81, hostPort: 8080, protocol: 'tcp' },
      ]),
    ).toThrow(/twice/);
    expect(() => netdevArg([], '127.0.0.1,hostfwd=tcp::1-:22')).toThrow(/IPv4/);
  });

  it('captures the serial console to a file and opens QMP on a unix socket, with no monitor, display or default devices', () => {
    const args = buildQemuArgs(machine(), files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' });
    expect(valuesOf(args, '-serial')).toEqual(['file:/state/vm1/console.log']);
    expect(valuesOf(args, '-qmp')).toEqual(['unix:/state/vm1/qmp.sock,server=on,wait=off']);
    expect(valuesOf(args, '-pidfile')).toEqual(['/state/vm1/qemu.pid']);
    expect(args).toEqual(expect.arrayContaining(['-nodefaults', '-no-user-config', '-nographic', '-no-reboot']));
    expect(args).not.toContain('-monitor');
    expect(args).not.toContain('-daemonize');
  });

  it('is plain argv: values with spaces or shell characters stay single arguments, never a shell string', () => {
    const m = machine({ boot: { mode: 'microvm', kernel: '/img/vm linuz$(id)', kernelArgs: 'console=ttyS0 init=/bin/sh; rm -rf / `x`' } });
    const args = buildQemuArgs(m, files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' });
    expect(valuesOf(args, '-kernel')).toEqual(['/img/vm linuz$(id)']);
    expect(valuesOf(args, '-append')).toEqual(['console=ttyS0 init=/bin/sh; rm -rf / `x`']);
    expect(args.some((a) => a === 'sh' || a === '-c' || a === '/bin/sh')).toBe(false);
  });

  it('attaches disks as virtio drives, escaping commas in paths', () => {
    const args = buildQemuArgs(machine({ disks: [{ path: '/vol/a,b.qcow2', format: 'qcow2' }, { path: '/vol/data.img', format: 'raw' }] }), files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' });
    expect(valuesOf(args, '-drive')).toEqual(['file=/vol/a,,b.qcow2,format=qcow2,if=virtio,discard=unmap', 'file=/vol/data.img,format=raw,if=virtio,discard=unmap']);
    expect(qemuOptionValue('a,,b')).toBe('a,,,,b');
    expect(() => buildQemuArgs(machine({ disks: [{ path: '/x', format: 'raw,readonly=off' }] }), files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' })).toThrow(/format/);
  });

  it('boots a unikernel from its image as the first disk, with no kernel arguments', () => {
    const { machine: m, diskPaths } = machineFromSpec(spec({ vm: undefined, image: '/images/app.img' }), defaults);
    expect(m.boot).toEqual({ mode: 'unikernel' });
    expect(diskPaths).toEqual(['/images/app.img']);
    const args = buildQemuArgs({ ...m, disks: [{ path: '/state/vm1/disk0.qcow2', format: 'qcow2' }] }, files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' });
    expect(args).not.toContain('-kernel');
    expect(args).not.toContain('-append');
    expect(valuesOf(args, '-drive')).toEqual(['file=/state/vm1/disk0.qcow2,format=qcow2,if=virtio,discard=unmap']);
    // The volume manager's clone wins over the shared image.
    expect(machineFromSpec(spec({ vm: { mode: 'unikernel', disk: '/vol/clone.qcow2' }, image: '/images/app.img' }), defaults).diskPaths).toEqual(['/vol/clone.qcow2']);
  });

  it('adds a microVM disk when the spec has one', () => {
    expect(machineFromSpec(spec({ vm: { mode: 'microvm', kernel: '/k', disk: '/vol/root.qcow2' } }), defaults).diskPaths).toEqual(['/vol/root.qcow2']);
  });

  it('refuses specs it cannot run', () => {
    expect(() => machineFromSpec(spec({ vm: undefined }), defaults)).toThrow(/spec.vm/);
    expect(() => machineFromSpec(spec({ vm: { mode: 'microvm' } }), defaults)).toThrow(/kernel/);
    expect(() => machineFromSpec(spec({ vm: { mode: 'microvm', kernel: 'relative/vmlinuz' } }), defaults)).toThrow(/absolute/);
    expect(() => machineFromSpec(spec({ vm: { mode: 'microvm', kernel: '/k', initrd: '/a,b' } }), defaults)).toThrow(/commas/);
    expect(() => machineFromSpec(spec({ vm: { mode: 'firecracker' as 'microvm', kernel: '/k' } }), defaults)).toThrow(/mode/);
    expect(() => machineFromSpec(spec({ resources: { memoryMb: 8 } }), defaults)).toThrow(/memory/);
    expect(() => machineFromSpec(spec({ resources: { vcpus: 0 } }), defaults)).toThrow(/vcpus/);
    expect(() => machineFromSpec(spec({ vm: { mode: 'microvm', kernel: '/k', kernelArgs: 'a\nb' } }), defaults)).toThrow(/control/);
    expect(() => buildQemuArgs(machine(), files, { name: 'vm 1', ports: [], hostAddress: '127.0.0.1' })).toThrow(/name/);
  });

  it('adds a serial console and panic=-1 to the kernel command line unless it has its own', () => {
    expect(kernelCommandLine(undefined)).toBe('console=ttyS0 panic=-1');
    expect(kernelCommandLine('quiet')).toBe('console=ttyS0 panic=-1 quiet');
    expect(kernelCommandLine('console=hvc0 panic=5 quiet')).toBe('console=hvc0 panic=5 quiet');
    expect(kernelCommandLine('console=ttyS0 quiet')).toBe('panic=-1 console=ttyS0 quiet');
    expect(() => kernelCommandLine('x'.repeat(3000))).toThrow(/2048/);
  });

  it('restores from a snapshot with -incoming, the path quoted for the shell qemu runs it with', () => {
    const args = buildQemuArgs(machine(), files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1', incomingFile: '/snaps/vm1.mem' });
    expect(valuesOf(args, '-incoming')).toEqual(["exec:cat '/snaps/vm1.mem'"]);
    expect(migrationWriteUri('/snaps/vm1.mem.partial')).toBe("exec:trap '' TERM; cat > '/snaps/vm1.mem.partial'");
    expect(migrationReadUri('/snaps/a-b_c.1')).toBe("exec:cat '/snaps/a-b_c.1'");
  });

  it('gives a machine with a guest agent a virtio-serial port named for qemu-ga, backed by a unix socket qemu serves', () => {
    const args = buildQemuArgs(machine({ guestAgent: true }), { ...files, qgaSocket: '/state/vm1/qga.sock' }, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' });
    expect(valuesOf(args, '-chardev')).toEqual(['socket,id=qga0,path=/state/vm1/qga.sock,server=on,wait=off']);
    expect(valuesOf(args, '-device')).toEqual(
      expect.arrayContaining(['virtio-serial-pci,id=qga-serial0', 'virtserialport,bus=qga-serial0.0,chardev=qga0,name=org.qemu.guest_agent.0']),
    );
    // The controller comes before the port that sits on its bus.
    expect(args.indexOf('virtio-serial-pci,id=qga-serial0')).toBeLessThan(args.indexOf('virtserialport,bus=qga-serial0.0,chardev=qga0,name=org.qemu.guest_agent.0'));
    // Without it (e.g. a machine restored from an older snapshot) there is no such device.
    const without = buildQemuArgs(machine(), { ...files, qgaSocket: '/state/vm1/qga.sock' }, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' });
    expect(without).not.toContain('-chardev');
    expect(without.join(' ')).not.toContain('virtserialport');
    expect(() => buildQemuArgs(machine({ guestAgent: true }), files, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' })).toThrow(expect.objectContaining({ field: 'qgaSocket' }));
    expect(() => buildQemuArgs(machine({ guestAgent: true }), { ...files, qgaSocket: '/state/a,b/qga.sock' }, { name: 'vm1', ports: [], hostAddress: '127.0.0.1' })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', field: 'qgaSocket' }),
    );
    expect(machineFromSpec(spec(), { ...defaults, guestAgent: true }).machine.guestAgent).toBe(true);
    expect(machineFromSpec(spec(), defaults).machine.guestAgent).toBeUndefined();
  });

  it('refuses snapshot paths a shell could misread', () => {
    for (const bad of ["/snaps/it's", '/snaps/a b', '/snaps/$(id)', 'relative/file', '/snaps/../etc/x', '/snaps/a;b', '/snaps/`x`', '/snaps/a\nb']) {
      expect(() => checkSnapshotPath(bad)).toThrow(/snapshot path/);
    }
    expect(checkSnapshotPath('/var/lib/corral/snaps/vm-1.2@x+y=z')).toBe('/var/lib/corral/snaps/vm-1.2@x+y=z');
  });
});
