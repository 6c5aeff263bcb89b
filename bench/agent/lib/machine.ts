import { readFileSync, statfsSync } from 'node:fs';
import { availableParallelism, loadavg, release } from 'node:os';
import { createExecutor, execErrorFromResult, type Command } from '@corral/exec';
import { silentLogger } from '@corral/logging';

// What a RESULTS.md section says about the machine it ran on (bench/RESULTS.md
// names the fields): figures from different machines are not comparable, and
// on these shared 2-core hosts even the load at the start matters.

export function filesystemOf(path: string): string {
  const names: Record<number, string> = { 0xef53: 'ext4', 0x01021994: 'tmpfs', 0x794c7630: 'overlayfs', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x2fc12fc1: 'zfs' };
  try {
    const type = statfsSync(path).type;
    return names[type] ?? `0x${type.toString(16)}`;
  } catch {
    return 'unknown';
  }
}

export function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    return line ? line.split(':')[1].trim() : 'unknown';
  } catch {
    return 'unknown';
  }
}

const firstLine: (program: string, args: string[]) => Command<string> = (program, args) => ({
  program,
  args,
  timeoutMs: 10_000,
  parse: (stdout) => stdout.split('\n').find((l) => l.trim())?.trim() ?? '',
  mapError: execErrorFromResult,
});

const TOOLS: Array<{ program: string; args: string[] }> = [
  { program: 'qemu-img', args: ['--version'] },
  { program: 'qemu-system-x86_64', args: ['--version'] },
  { program: 'podman', args: ['--version'] },
  { program: 'runc', args: ['--version'] },
];

/** First line of `--version` of each tool the agent benchmarks use; absent tools are left out. */
export async function toolVersions(programs: readonly string[] = TOOLS.map((t) => t.program)): Promise<string[]> {
  const searchPath = [process.env.PATH ?? '', '/usr/sbin', '/sbin'].filter(Boolean).join(':');
  const executor = createExecutor({ allowedPrograms: TOOLS.map((t) => t.program), logger: silentLogger, searchPath });
  const out: string[] = [];
  for (const tool of TOOLS) {
    if (!programs.includes(tool.program) || !executor.resolve(tool.program)) continue;
    try {
      out.push(await executor.run(firstLine(tool.program, tool.args)));
    } catch {
      out.push(`${tool.program} (version unknown)`);
    }
  }
  return out;
}

/** One line: nproc, kernel, CPU, load at the start, Node, tool versions, filesystem of the work dir. */
export async function machineLine(workDir: string, programs?: readonly string[]): Promise<string> {
  const load = loadavg().map((l) => l.toFixed(2)).join(' ');
  const tools = await toolVersions(programs);
  return [
    `Machine: nproc ${availableParallelism()}, kernel ${release()}, CPU ${cpuModel()}, load average at start ${load}`,
    `Node ${process.version}`,
    ...tools,
    `work dir on ${filesystemOf(workDir)}`,
  ].join('; ');
}
