import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@corral/logging';
import { DeviceMapperVolumeManager } from './device-mapper-volume-manager';
import { Qcow2VolumeManager } from './qcow2-volume-manager';
import { checkDeviceMapperControl, detectVolumeCapability, selectVolumeManager } from './select-volume-manager';

describe('volume manager selection', () => {
  let bin: string;
  beforeEach(() => {
    bin = mkdtempSync(join(tmpdir(), 'corral-bin-'));
  });
  afterEach(() => rmSync(bin, { recursive: true, force: true }));

  const install = (...programs: string[]) => {
    for (const p of programs) {
      writeFileSync(join(bin, p), '#!/bin/sh\nexit 0\n');
      chmodSync(join(bin, p), 0o755);
    }
  };
  const working = () => undefined;
  const missing = (path: string) => `no ${path}`;

  it('picks device-mapper when the control node works and dmsetup is installed', () => {
    install('dmsetup', 'losetup', 'qemu-img');
    expect(detectVolumeCapability({ searchPath: bin, checkControl: working })).toEqual({
      kind: 'device-mapper',
      reason: expect.stringContaining('device-mapper snapshots'),
      usable: true,
    });
  });

  it('falls back to qcow2 without the control node, saying why', () => {
    install('dmsetup', 'losetup', 'qemu-img');
    expect(detectVolumeCapability({ searchPath: bin, checkControl: missing })).toEqual({ kind: 'qcow2', reason: 'no /dev/mapper/control: qcow2 overlays', usable: true });
  });

  it('falls back to qcow2 without dmsetup', () => {
    install('losetup', 'qemu-img');
    expect(detectVolumeCapability({ searchPath: bin, checkControl: working })).toMatchObject({ kind: 'qcow2', reason: expect.stringContaining('dmsetup is not installed') });
  });

  it('says when the chosen kind cannot work for lack of its program', () => {
    expect(detectVolumeCapability({ searchPath: bin, checkControl: missing })).toMatchObject({ kind: 'qcow2', usable: false, reason: expect.stringContaining('qemu-img is not installed') });
  });

  it('reports a missing control node', () => {
    expect(checkDeviceMapperControl(join(bin, 'control'))).toBe(`no ${join(bin, 'control')}`);
  });

  it('builds the selected manager with an executor allowed only its programs', () => {
    install('dmsetup', 'losetup', 'qemu-img');
    const stateDir = join(bin, 'state');
    const dm = selectVolumeManager({ stateDir, logger: silentLogger, searchPath: bin, checkControl: working });
    expect(dm.manager).toBeInstanceOf(DeviceMapperVolumeManager);
    const qcow2 = selectVolumeManager({ stateDir, logger: silentLogger, searchPath: bin, checkControl: missing });
    expect(qcow2.manager).toBeInstanceOf(Qcow2VolumeManager);
    expect(qcow2.manager.kind).toBe('qcow2');
    const forced = selectVolumeManager({ stateDir, logger: silentLogger, searchPath: bin, checkControl: working, force: 'qcow2' });
    expect(forced.manager).toBeInstanceOf(Qcow2VolumeManager);
    expect(forced.capability.reason).toContain('forced');
  });

  it('on this machine (no device-mapper in the kernel) picks qcow2', () => {
    const { kind } = detectVolumeCapability();
    if (checkDeviceMapperControl() === undefined) return; // a machine with device-mapper: nothing to check here
    expect(kind).toBe('qcow2');
  });
});
