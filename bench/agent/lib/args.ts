import { tmpdir } from 'node:os';
import { InvalidArgumentError } from '@corral/domain';

// The command line of bench/agent/run.ts, parsed into options (pure).

export const PARTS = ['clone', 'create', 'pause', 'snapshot'] as const;
export const DRIVERS = ['process', 'podman', 'qemu'] as const;
export type Part = (typeof PARTS)[number];
export type DriverName = (typeof DRIVERS)[number];

export interface BenchOptions {
  parts: Part[];
  drivers: DriverName[];
  /** create→serving samples per side for process and podman. */
  n: number;
  /** create→serving samples per side for qemu, and restores/cold boots in the snapshot part. */
  vmN: number;
  /** pause+resume cycles per side and driver. */
  pauseN: number;
  /** clones per base size. */
  cloneN: number;
  /** Where the run's files go (a fresh directory under it). */
  dir: string;
  /** Append the section to bench/RESULTS.md. */
  append: boolean;
  help: boolean;
}

export const USAGE = `npx tsx bench/agent/run.ts [options]

  --parts LIST     which parts, comma-separated: ${PARTS.join(',')} (default: all)
  --drivers LIST   which drivers for create/pause: ${DRIVERS.join(',')} (default: all; snapshot needs qemu)
  --n N            create→serving samples per side, process and podman (default 10)
  --vm-n N         create→serving samples per side for qemu, and snapshot restores / cold boots (default 6)
  --pause-n N      pause+resume cycles per side and driver (default 20)
  --clone-n N      clones per base size in the clone part (default 20)
  --dir PATH       work directory parent (default ${tmpdir()}; CLONE_BENCH_DIR is honoured too)
  --no-append      print the tables only; do not append to bench/RESULTS.md
  -h, --help       this text

Every sample pair runs Corral and the raw baseline back to back, alternating
which goes first. Ctrl-C removes everything the run created.`;

function list<T extends string>(raw: string, allowed: readonly T[], flag: string): T[] {
  const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new InvalidArgumentError(`${flag} needs at least one of ${allowed.join(', ')}`, { field: flag });
  for (const item of items) {
    if (!allowed.includes(item as T)) throw new InvalidArgumentError(`${flag}: unknown ${JSON.stringify(item)}; use ${allowed.join(', ')}`, { field: flag });
  }
  // Always in the canonical order, whatever order they were given in.
  return allowed.filter((a) => items.includes(a));
}

function count(raw: string | undefined, flag: string): number {
  const value = Number(raw);
  if (raw === undefined || !Number.isInteger(value) || value < 1 || value > 10_000) {
    throw new InvalidArgumentError(`${flag} must be a whole number from 1 to 10000`, { field: flag });
  }
  return value;
}

export function parseArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): BenchOptions {
  const options: BenchOptions = {
    parts: [...PARTS],
    drivers: [...DRIVERS],
    n: 10,
    vmN: 6,
    pauseN: 20,
    cloneN: env.CLONE_BENCH_N ? count(env.CLONE_BENCH_N, 'CLONE_BENCH_N') : 20,
    dir: env.CLONE_BENCH_DIR || tmpdir(),
    append: true,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new InvalidArgumentError(`${flag} needs a value`, { field: flag });
      i++;
      return next;
    };
    switch (flag) {
      case '--parts':
        options.parts = list(value(), PARTS, flag);
        break;
      case '--drivers':
        options.drivers = list(value(), DRIVERS, flag);
        break;
      case '--n':
        options.n = count(value(), flag);
        break;
      case '--vm-n':
        options.vmN = count(value(), flag);
        break;
      case '--pause-n':
        options.pauseN = count(value(), flag);
        break;
      case '--clone-n':
        options.cloneN = count(value(), flag);
        break;
      case '--dir':
        options.dir = value();
        break;
      case '--no-append':
        options.append = false;
        break;
      case '-h':
      case '--help':
        options.help = true;
        break;
      default:
        throw new InvalidArgumentError(`unknown option ${JSON.stringify(arg)} (see --help)`, { field: arg });
    }
  }
  if (!options.dir.startsWith('/')) throw new InvalidArgumentError('--dir must be an absolute path', { field: '--dir' });
  return options;
}
