import { readdirSync, readFileSync } from 'node:fs';

// Killing the `podman exec` client does not end the command inside the
// container (podman proxies no signal from an exec client; conmon keeps the
// session). So each interactive exec carries a random marker in its
// environment, set with `--env` in argv (it is no secret) so that only the
// command inside gets it, not the podman client or conmon, and ending a
// session kills every host process that carries it: the command and
// whatever it started that kept its environment.

export const EXEC_MARKER_VARIABLE = 'CORRAL_EXEC_ID';

/** SIGKILLs the processes whose environment holds the marker; returns how many. */
export function killMarkedProcesses(marker: string, procDir = '/proc'): number {
  if (!/^[0-9a-f]{16,64}$/.test(marker)) throw new RangeError('not an exec marker');
  const entry = Buffer.from(`${EXEC_MARKER_VARIABLE}=${marker}\0`);
  const afterNul = Buffer.concat([Buffer.from([0]), entry]);
  let killed = 0;
  let names: string[];
  try {
    names = readdirSync(procDir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const environ = readFileSync(`${procDir}/${name}/environ`);
      if (environ.indexOf(entry) !== 0 && !environ.includes(afterNul)) continue;
      process.kill(Number(name), 'SIGKILL');
      killed++;
    } catch {
      // Gone meanwhile, or not ours to read: nothing to do.
    }
  }
  return killed;
}
