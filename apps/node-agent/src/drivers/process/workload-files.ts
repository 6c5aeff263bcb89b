import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, readdir, realpath, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, ResourceExhaustedError } from '@corral/domain';
import type { FileEntry, FileKind, WriteFileOptions } from '../driver';
import { checkSandboxFilePath, checkSandboxPath } from '../sandbox-path';

// Files of a process workload. A plain process has no filesystem of its
// own, so its root is its working directory (`<task dir>/work`): the API
// path `/data/x` is `<work>/data/x`. Paths are checked lexically (absolute,
// no `..`), then resolved on the host, and anything whose real location is
// outside the root — a symlink to /etc, `..` hidden in a link — is refused
// (InvalidArgument), not followed. This confines API callers; it is no
// sandbox against the workload itself, which runs as the agent's user
// (raw_exec) and could swap a directory for a symlink between check and use.

const UPLOAD_PREFIX = '.corral-upload-';

export class WorkloadRoot {
  constructor(private readonly root: string) {}

  /** The host path of a sandbox path whose real location is inside the root (the path itself may be absent). */
  async resolve(path: string, options: { file: boolean }): Promise<string> {
    const normal = options.file ? checkSandboxFilePath(path) : checkSandboxPath(path);
    const realRoot = await this.realRoot();
    const host = normal === '/' ? realRoot : join(realRoot, ...normal.slice(1).split('/'));
    // The deepest part of the path that exists decides where it really is.
    let existing = host;
    for (;;) {
      try {
        const real = await realpath(existing);
        if (!inside(realRoot, real)) throw new InvalidArgumentError('path leads outside the workload', { field: 'path' });
        return existing === host ? real : join(real, relative(existing, host));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
        // A dangling symlink is refused outright: where it would lead is unknowable.
        const link = await lstat(existing).catch(() => undefined);
        if (link?.isSymbolicLink()) throw new InvalidArgumentError('path leads outside the workload', { field: 'path' });
        const parent = dirname(existing);
        if (parent === existing || !inside(realRoot, parent)) throw new NotFoundError('the workload has no files yet', { field: 'path' });
        existing = parent;
      }
    }
  }

  async readFile(path: string): Promise<AsyncIterable<Buffer>> {
    const host = await this.resolve(path, { file: true });
    const info = await stat(host).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') throw new NotFoundError(`${path} does not exist in the workload`, { field: 'path' });
      throw err;
    });
    if (info.isDirectory()) throw new InvalidArgumentError(`${path} is a directory`, { field: 'path' });
    if (!info.isFile()) throw new InvalidArgumentError(`${path} is not a regular file`, { field: 'path' });
    // O_NOFOLLOW: the resolved path is final, a symlink put there since is not followed.
    const handle = await open(host, constants.O_RDONLY | constants.O_NOFOLLOW);
    // The stream owns the handle and closes it when done or destroyed.
    return handle.createReadStream() as AsyncIterable<Buffer>;
  }

  async writeFile(path: string, content: AsyncIterable<Buffer>, options: WriteFileOptions): Promise<{ bytes: number }> {
    const host = await this.resolve(path, { file: true });
    const dir = dirname(host);
    const dirInfo = await stat(dir).catch(() => undefined);
    if (!dirInfo) throw new NotFoundError(`the directory of ${path} does not exist in the workload`, { field: 'path' });
    if (!dirInfo.isDirectory()) throw new InvalidArgumentError(`the parent of ${path} is not a directory`, { field: 'path' });
    const existing = await lstat(host).catch(() => undefined);
    if (existing?.isDirectory()) throw new InvalidArgumentError(`${path} is a directory`, { field: 'path' });
    // Written next to the target and renamed over it: readers see the old content or the new.
    const temp = join(dir, `${UPLOAD_PREFIX}${randomBytes(8).toString('hex')}`);
    const file = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, (options.mode ?? 0o644) & 0o7777);
    let bytes = 0;
    try {
      try {
        for await (const chunk of content) {
          bytes += chunk.length;
          if (bytes > options.maxBytes) throw new ResourceExhaustedError(`the file is larger than the limit of ${options.maxBytes} bytes`, { field: 'content' });
          await file.write(chunk);
        }
        await file.chmod((options.mode ?? 0o644) & 0o7777);
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(temp, host);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    return { bytes };
  }

  async listDirectory(path: string): Promise<FileEntry[]> {
    const host = await this.resolve(path, { file: false });
    let names: string[];
    try {
      names = await readdir(host);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new NotFoundError(`${path} does not exist in the workload`, { field: 'path' });
      if (code === 'ENOTDIR') throw new InvalidArgumentError(`${path} is not a directory`, { field: 'path' });
      throw err;
    }
    const entries: FileEntry[] = [];
    for (const name of names.sort()) {
      const info = await lstat(join(host, name)).catch(() => undefined);
      if (!info) continue; // removed while listing
      const kind: FileKind = info.isFile() ? 'file' : info.isDirectory() ? 'directory' : info.isSymbolicLink() ? 'symlink' : 'other';
      entries.push({ name, kind, sizeBytes: info.size, mode: info.mode & 0o7777, modifiedAt: info.mtime });
    }
    return entries;
  }

  /** The working directory for an exec: the root, or a directory inside it. */
  async workingDir(path: string | undefined): Promise<string> {
    if (!path) return this.realRoot();
    const host = await this.resolve(path, { file: false });
    const info = await stat(host).catch(() => undefined);
    if (!info?.isDirectory()) throw new InvalidArgumentError('workingDir is not a directory in the workload', { field: 'workingDir' });
    return host;
  }

  private async realRoot(): Promise<string> {
    try {
      return await realpath(this.root);
    } catch {
      throw new FailedPreconditionError('the workload has no working directory on this host');
    }
  }
}

function inside(root: string, candidate: string): boolean {
  return candidate === root || candidate.startsWith(root.endsWith(sep) ? root : root + sep);
}
