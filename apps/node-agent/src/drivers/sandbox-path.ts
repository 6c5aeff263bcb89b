import { posix } from 'node:path';
import { InvalidArgumentError } from '@corral/domain';

// Paths callers give for files inside a workload's sandbox (FilesCapability).
// They are checked lexically before any driver touches them: absolute, no
// `..` segment (even one that would stay inside: it only ever means someone
// is probing), no NUL, bounded length. Where symlinks resolve is each
// driver's business (inside the container, inside the workload's root).

export const MAX_SANDBOX_PATH_LENGTH = 4096;

/** The normalised absolute path (no trailing slash, except for `/`), or InvalidArgumentError naming `field`. */
export function checkSandboxPath(path: string, field = 'path'): string {
  if (typeof path !== 'string' || path.length === 0) throw new InvalidArgumentError('path is required', { field });
  if (path.length > MAX_SANDBOX_PATH_LENGTH) throw new InvalidArgumentError(`path may have at most ${MAX_SANDBOX_PATH_LENGTH} characters`, { field });
  if (path.includes('\0')) throw new InvalidArgumentError('path must not contain NUL', { field });
  if (!path.startsWith('/')) throw new InvalidArgumentError('path must be absolute', { field });
  if (path.split('/').includes('..')) throw new InvalidArgumentError('path must not contain ".."', { field });
  const normal = posix.normalize(path);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

/** A file's path cannot be the root itself. */
export function checkSandboxFilePath(path: string, field = 'path'): string {
  const normal = checkSandboxPath(path, field);
  if (normal === '/') throw new InvalidArgumentError('path must name a file, not /', { field });
  return normal;
}
