import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/**
 * The absolute path of an executable: an absolute path is checked as is, a
 * bare name is looked up on `searchPath` like a shell would. Undefined when
 * there is no such executable file.
 */
export function resolveProgram(program: string, searchPath: string | undefined): string | undefined {
  if (isAbsolute(program)) return isExecutableFile(program) ? program : undefined;
  if (program.includes('/')) return undefined; // relative paths depend on the cwd: not allowed
  for (const dir of (searchPath ?? '').split(delimiter)) {
    if (!dir || !isAbsolute(dir)) continue;
    const candidate = join(dir, program);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
