import { InvalidArgumentError, NotFoundError } from '@corral/domain';
import { ExecError, type ExecResult } from '@corral/exec';
import {
  DM_UUID_PREFIX,
  dmIdentity,
  dmsetupCreateSnapshot,
  dmsetupInfo,
  dmsetupRemove,
  losetupAttach,
  losetupDetach,
  losetupList,
  parseDmsetupInfo,
  parseLosetupList,
  snapshotTable,
} from './dm-commands';

const result = (stderr: string, stdout = ''): ExecResult => ({ program: '/usr/sbin/x', exitCode: 1, signal: null, stdout, stderr, durationMs: 1 });

describe('losetup commands', () => {
  it('builds argv', () => {
    expect(losetupList().args).toEqual(['--list', '--json', '--output', 'NAME,BACK-FILE,RO']);
    expect(losetupAttach('/img/base.raw', { readOnly: true }).args).toEqual(['--find', '--show', '--read-only', '/img/base.raw']);
    expect(losetupAttach('/s/w1.cow', { readOnly: false }).args).toEqual(['--find', '--show', '/s/w1.cow']);
    expect(losetupDetach('/dev/loop3').args).toEqual(['--detach', '/dev/loop3']);
  });

  it('refuses anything but absolute files and /dev/loopN devices', () => {
    expect(() => losetupAttach('rel.img', { readOnly: true })).toThrow(InvalidArgumentError);
    expect(() => losetupDetach('/dev/sda')).toThrow(InvalidArgumentError);
    expect(() => losetupDetach('--detach-all')).toThrow(InvalidArgumentError);
  });

  it('parses the list as util-linux 2.38 prints it', () => {
    // Captured on this machine.
    const stdout = '{\n   "loopdevices": [\n      {\n         "name": "/dev/loop0",\n         "back-file": "/tmp/qtest/base.raw",\n         "ro": true\n      }\n   ]\n}\n';
    expect(parseLosetupList(stdout)).toEqual([{ name: '/dev/loop0', backFile: '/tmp/qtest/base.raw', readOnly: true }]);
    expect(parseLosetupList('{\n   "loopdevices": [\n\n   ]\n}\n')).toEqual([]);
    expect(parseLosetupList('')).toEqual([]);
  });

  it('parses older "0"/"1" booleans and deleted backing files', () => {
    const stdout = JSON.stringify({ loopdevices: [{ name: '/dev/loop1', 'back-file': '/s/w.cow (deleted)', ro: '0' }, { name: '/dev/loop2', 'back-file': null, ro: '1' }] });
    expect(parseLosetupList(stdout)).toEqual([
      { name: '/dev/loop1', backFile: '/s/w.cow', readOnly: false },
      { name: '/dev/loop2', backFile: undefined, readOnly: true },
    ]);
  });

  it('reads the attached device, and refuses anything else', () => {
    const attach = losetupAttach('/img/base.raw', { readOnly: true });
    expect(attach.parse('/dev/loop7\n', '')).toBe('/dev/loop7');
    expect(() => attach.parse('', '')).toThrow();
  });

  it('maps a detach of a device that is not attached to NotFound', () => {
    const detach = losetupDetach('/dev/loop0');
    expect(detach.mapError(result('losetup: /dev/loop0: detach failed: No such device or address'))).toBeInstanceOf(NotFoundError);
    expect(detach.mapError(result('losetup: /dev/loop0: detach failed: Device or resource busy'))).toBeInstanceOf(ExecError);
  });
});

describe('dmsetup commands', () => {
  const snapshot = { name: 'corral-w1', uuid: 'CORRAL-abc', originDevice: '/dev/loop0', cowDevice: '/dev/loop1', sectors: 204800 };

  it('builds a persistent snapshot table with 4 KiB chunks', () => {
    expect(snapshotTable(snapshot)).toBe('0 204800 snapshot /dev/loop0 /dev/loop1 P 8');
    expect(snapshotTable({ ...snapshot, chunkSectors: 16 })).toBe('0 204800 snapshot /dev/loop0 /dev/loop1 P 16');
  });

  it('creates with name, uuid and the table as one argv element', () => {
    expect(dmsetupCreateSnapshot(snapshot).args).toEqual(['create', 'corral-w1', '--uuid', 'CORRAL-abc', '--table', '0 204800 snapshot /dev/loop0 /dev/loop1 P 8']);
  });

  it('refuses bad tables and names', () => {
    expect(() => snapshotTable({ ...snapshot, sectors: 0 })).toThrow(InvalidArgumentError);
    expect(() => snapshotTable({ ...snapshot, originDevice: '/dev/sda1' })).toThrow(InvalidArgumentError);
    expect(() => dmsetupCreateSnapshot({ ...snapshot, name: '../x' })).toThrow(InvalidArgumentError);
    expect(() => dmsetupCreateSnapshot({ ...snapshot, uuid: 'LVM-x' })).toThrow(InvalidArgumentError);
    expect(() => dmsetupRemove('-f')).toThrow(InvalidArgumentError);
  });

  it('removes with --retry and maps a missing device to NotFound', () => {
    const remove = dmsetupRemove('corral-w1');
    expect(remove.args).toEqual(['remove', '--retry', 'corral-w1']);
    expect(remove.mapError(result('Device corral-w1 not found\nCommand failed.'))).toBeInstanceOf(NotFoundError);
    expect(remove.mapError(result('device-mapper: remove ioctl on corral-w1 failed: Device or resource busy'))).toBeInstanceOf(ExecError);
  });

  it('lists names and uuids', () => {
    expect(dmsetupInfo().args).toEqual(['info', '-c', '--noheadings', '-o', 'name,uuid', '--separator', '\t']);
    expect(parseDmsetupInfo('corral-w1\tCORRAL-abc\nvg0-root\tLVM-xyz\nplain\t\n')).toEqual([
      { name: 'corral-w1', uuid: 'CORRAL-abc' },
      { name: 'vg0-root', uuid: 'LVM-xyz' },
      { name: 'plain', uuid: '' },
    ]);
    expect(parseDmsetupInfo('No devices found\n')).toEqual([]);
  });

  it('names a workload\'s device after it, hashed when too long, with a Corral uuid', () => {
    expect(dmIdentity('w1').name).toBe('corral-w1');
    const long = dmIdentity('a'.repeat(128));
    expect(long.name.length).toBeLessThanOrEqual(127);
    expect(long.name).toMatch(/^corral-[0-9a-f]{40}$/);
    expect(dmIdentity('w1').uuid.startsWith(DM_UUID_PREFIX)).toBe(true);
    expect(dmIdentity('w1').uuid).not.toBe(dmIdentity('w2').uuid);
  });
});
