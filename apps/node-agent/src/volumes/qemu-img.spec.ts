import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '@corral/domain';
import { ExecError, type ExecResult } from '@corral/exec';
import { diskFormatOf, mapQemuImgError, parseQemuImgInfo, qemuImgCreateOverlay, qemuImgFlatten, qemuImgInfo } from './qemu-img';

// Output captured from qemu-img 7.2 (Debian 12).
const OVERLAY_INFO = `{
    "backing-filename-format": "raw",
    "virtual-size": 104857600,
    "filename": "c.qcow2",
    "cluster-size": 65536,
    "format": "qcow2",
    "actual-size": 200704,
    "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "corrupt": false}},
    "full-backing-filename": "/tmp/qtest/base.raw",
    "backing-filename": "/tmp/qtest/base.raw",
    "dirty-flag": false
}`;
const RAW_INFO = `{
    "virtual-size": 104857600,
    "filename": "base.raw",
    "format": "raw",
    "actual-size": 0,
    "dirty-flag": false
}`;

const failed = (stderr: string, exitCode = 1): ExecResult => ({ program: '/usr/bin/qemu-img', exitCode, signal: null, stdout: '', stderr, durationMs: 3 });

describe('qemu-img commands', () => {
  it('builds info, create and rebase argv with no shell and absolute paths', () => {
    expect(qemuImgInfo('/img/base.raw').args).toEqual(['info', '--output=json', '/img/base.raw']);
    expect(qemuImgInfo('/img/base.raw', { format: 'raw' }).args).toEqual(['info', '--output=json', '-f', 'raw', '/img/base.raw']);
    expect(qemuImgCreateOverlay({ basePath: '/img/base.raw', baseFormat: 'raw', clonePath: '/state/w1.qcow2' })).toMatchObject({
      program: 'qemu-img',
      args: ['create', '-q', '-f', 'qcow2', '-b', '/img/base.raw', '-F', 'raw', '/state/w1.qcow2'],
    });
    expect(qemuImgFlatten('/state/w1.qcow2').args).toEqual(['rebase', '-q', '-f', 'qcow2', '-b', '', '/state/w1.qcow2']);
  });

  it('refuses relative paths (a path could otherwise read as an option)', () => {
    expect(() => qemuImgInfo('-f')).toThrow(InvalidArgumentError);
    expect(() => qemuImgCreateOverlay({ basePath: 'base.raw', baseFormat: 'raw', clonePath: '/c' })).toThrow(InvalidArgumentError);
  });

  it('parses info of an overlay and of a raw image', () => {
    expect(parseQemuImgInfo(OVERLAY_INFO)).toEqual({
      format: 'qcow2',
      virtualBytes: 104857600,
      actualBytes: 200704,
      backingFile: '/tmp/qtest/base.raw',
      fullBackingFile: '/tmp/qtest/base.raw',
      backingFormat: 'raw',
    });
    expect(parseQemuImgInfo(RAW_INFO)).toEqual({ format: 'raw', virtualBytes: 104857600, actualBytes: 0, backingFile: undefined, fullBackingFile: undefined, backingFormat: undefined });
  });

  it('rejects output that is not info JSON', () => {
    expect(() => parseQemuImgInfo('qemu-img: oops')).toThrow(/JSON/);
    expect(() => parseQemuImgInfo('{"filename": "x"}')).toThrow(/virtual-size/);
  });

  it('accepts raw and qcow2 bases only', () => {
    expect(diskFormatOf('raw')).toBe('raw');
    expect(diskFormatOf('qcow2')).toBe('qcow2');
    expect(() => diskFormatOf('vmdk')).toThrow(InvalidArgumentError);
  });

  it('maps a missing file to NotFound, a locked disk to FailedPrecondition, anything else to an ExecError', () => {
    expect(mapQemuImgError(failed("qemu-img: Could not open 'nope': Could not open 'nope': No such file or directory"))).toBeInstanceOf(NotFoundError);
    expect(mapQemuImgError(failed('qemu-img: Could not open \'/s/w.qcow2\': Failed to get "write" lock\nIs another process using the image [/s/w.qcow2]?'))).toBeInstanceOf(
      FailedPreconditionError,
    );
    const other = mapQemuImgError(failed('qemu-img: Image is corrupt'));
    expect(other).toBeInstanceOf(ExecError);
    // Client-facing text never carries qemu-img's own.
    expect(mapQemuImgError(failed('No such file or directory: /secret/path')).message).not.toContain('/secret');
  });
});
