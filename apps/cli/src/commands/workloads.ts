import { Option, type Command } from 'commander';
import { renderDetails, renderTable } from '../output/printer';
import { workloadView, type WorkloadView } from '../output/views';
import type { Session } from '../session';
import { UsageError } from '../usage-error';
import { envEntry, positiveInteger, routeOption, type RouteOption } from './parsers';

interface RunOptions {
  driver: string;
  env?: Record<string, string>;
  image?: string;
  port?: RouteOption[];
  memory?: number;
  vcpus?: number;
  vmMode?: string;
  kernel?: string;
  initrd?: string;
  kernelArgs?: string;
  rootDisk?: string;
}

function resourcesText(r: WorkloadView['resources']): string {
  const parts = [r.vcpus === null ? '' : `${r.vcpus} vCPU`, r.memoryMb === null ? '' : `${r.memoryMb} MB`].filter(Boolean);
  return parts.join(', ');
}

function workloadDetails(w: WorkloadView): string {
  return renderDetails([
    ['ID', w.id],
    ['Name', w.name],
    ['Team', w.teamId],
    ['Driver', w.driver],
    ['Command', JSON.stringify(w.command)],
    ['Image', w.image],
    ['VM', w.vm ? [w.vm.mode, w.vm.kernel, w.vm.initrd, w.vm.kernelArgs && JSON.stringify(w.vm.kernelArgs)].filter(Boolean).join(' ') : null],
    ['Resources', resourcesText(w.resources)],
    ['Env', w.envKeys.join(',')],
    ['State', w.state],
    ['Host', w.hostId],
    ['Routes', w.routes.map((r) => `${r.name} ${r.port}/${r.protocol}`).join(', ')],
    // host port → the port the workload listens on
    ['Ports', w.ports.map((p) => `${p.name} ${p.hostPort}->${p.guestPort}/${p.protocol}`).join(', ')],
    ['Exit code', w.exitCode],
    ['Reason', w.reason],
    ['Created', w.createdAt],
    ['Updated', w.updatedAt],
  ]);
}

function mebibytes(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function present<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('the gateway answered without a workload');
  return value;
}

export function registerWorkloads(program: Command, session: Session): void {
  const workloads = program.command('workloads').alias('workload').description('run and manage workloads');

  workloads
    .command('run')
    .description('run a workload: corral workloads run NAME --driver process [--port http:8080] -- CMD ARGS...')
    .argument('<name>', 'workload name: lowercase letters, digits and dashes')
    .argument('[command...]', "the program and its arguments (put them after --); podman runs the image's own without one")
    .requiredOption('--driver <driver>', 'process, podman or qemu')
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', envEntry)
    .option('--image <image>', 'podman: image reference; qemu unikernel: bootable image')
    .option('-p, --port <name:port[/udp]>', 'a port the workload listens on; it gets a host port and $PORT_<NAME> (repeatable)', routeOption)
    .option('--memory <mb>', 'memory in MB', positiveInteger)
    .option('--vcpus <n>', 'virtual CPUs', positiveInteger)
    .addOption(new Option('--vm-mode <mode>', 'qemu: microvm (needs --kernel) or unikernel (needs --image); default from the flags given').choices(['microvm', 'unikernel']))
    .option('--kernel <path>', 'qemu microvm: kernel to boot')
    .option('--initrd <path>', 'qemu microvm: initramfs')
    .option('--kernel-args <args>', 'qemu: kernel command line')
    .option('--root-disk <path>', "qemu microvm: base disk image on the host, cloned copy-on-write into the VM's own root disk")
    .action(async (name: string, argv: string[], options: RunOptions, command: Command) => {
      if (options.driver === 'process' && argv.length === 0) throw new UsageError('a process workload needs a command: put it after --');
      const wantsVm = options.driver === 'qemu' || [options.vmMode, options.kernel, options.initrd, options.kernelArgs, options.rootDisk].some((v) => v !== undefined);
      const res = await session.client(command).createWorkload({
        name,
        driver: options.driver,
        command: argv,
        env: options.env ?? {},
        image: options.image ?? '',
        resources: options.memory !== undefined || options.vcpus !== undefined ? { vcpus: options.vcpus ?? 0, memoryMb: options.memory ?? 0 } : undefined,
        routes: options.port ?? [],
        vm: wantsVm
          ? {
              mode: options.vmMode ?? (options.kernel ? 'microvm' : 'unikernel'),
              kernel: options.kernel ?? '',
              initrd: options.initrd ?? '',
              kernelArgs: options.kernelArgs ?? '',
              rootDisk: options.rootDisk ?? '',
            }
          : undefined,
      });
      session.printer(command).result(workloadView(present(res.workload)), workloadDetails);
    });

  workloads
    .command('list')
    .alias('ls')
    .description('list the workloads you can see')
    .action(async (_options, command: Command) => {
      const res = await session.client(command).listWorkloads({});
      session.printer(command).result({ workloads: res.workloads.map(workloadView) }, ({ workloads: rows }) =>
        renderTable(rows, [
          { header: 'ID', value: (w) => w.id },
          { header: 'NAME', value: (w) => w.name },
          { header: 'STATE', value: (w) => w.state },
          { header: 'DRIVER', value: (w) => w.driver },
          { header: 'HOST', value: (w) => w.hostId ?? '' },
          { header: 'EXIT', value: (w) => (w.exitCode === null ? '' : String(w.exitCode)) },
          { header: 'CREATED', value: (w) => w.createdAt ?? '' },
        ]),
      );
    });

  workloads
    .command('get')
    .argument('<id>', 'workload id')
    .description('show one workload')
    .action(async (id: string, _options, command: Command) => {
      const res = await session.client(command).getWorkload({ id });
      session.printer(command).result(workloadView(present(res.workload)), workloadDetails);
    });

  workloads
    .command('logs')
    .argument('<id>', 'workload id')
    .option('--tail <bytes>', 'how many bytes from the end (default 65536)', positiveInteger)
    .option('-f, --follow', 'keep printing new output until the workload ends (or Ctrl-C)')
    .description("print the end of a workload's output")
    .action(async (id: string, options: { tail?: number; follow?: boolean }, command: Command) => {
      if (options.follow) {
        const printer = session.printer(command);
        const interrupted = new AbortController();
        const onInterrupt = () => interrupted.abort();
        process.once('SIGINT', onInterrupt);
        try {
          const chunks = session.client(command).stream('streamWorkloadLogs', { id, tailBytes: options.tail ?? 0, follow: true }, { signal: interrupted.signal });
          for await (const chunk of chunks) {
            if (printer.format === 'json') session.io.stdout.write(`${JSON.stringify({ data: Buffer.from(chunk.data).toString('utf8') })}\n`);
            else printer.raw(chunk.data);
          }
        } finally {
          process.removeListener('SIGINT', onInterrupt);
        }
        return;
      }
      const res = await session.client(command).getWorkloadLogs({ id, tailBytes: options.tail ?? 0 });
      const printer = session.printer(command);
      if (printer.format === 'json') {
        printer.result({ data: Buffer.from(res.data).toString('utf8'), truncated: res.truncated }, () => '');
        return;
      }
      printer.raw(res.data);
      if (res.truncated) session.io.stderr.write('(earlier output left out; use --tail to see more)\n');
    });

  workloads
    .command('pause')
    .argument('<id>', 'workload id')
    .description('freeze a running workload in place (pausing a paused workload is fine)')
    .action(async (id: string, _options, command: Command) => {
      const res = await session.client(command).pauseWorkload({ id });
      session.printer(command).result(workloadView(present(res.workload)), workloadDetails);
    });

  workloads
    .command('resume')
    .argument('<id>', 'workload id')
    .description('resume a paused workload')
    .action(async (id: string, _options, command: Command) => {
      const res = await session.client(command).resumeWorkload({ id });
      session.printer(command).result(workloadView(present(res.workload)), workloadDetails);
    });

  workloads
    .command('snapshot')
    .argument('<id>', 'workload id')
    .option('--leave-paused', 'leave the workload paused afterwards')
    .description('take a memory snapshot of a running workload (qemu), showing its progress')
    .action(async (id: string, options: { leavePaused?: boolean }, command: Command) => {
      const printer = session.printer(command);
      const interrupted = new AbortController();
      const onInterrupt = () => interrupted.abort();
      process.once('SIGINT', onInterrupt);
      try {
        const events = session.client(command).stream('snapshotWorkload', { id, leavePaused: options.leavePaused ?? false }, { signal: interrupted.signal });
        for await (const event of events) {
          const kind = event.kind;
          if (kind?.$case === 'progress') {
            const p = kind.value;
            // Progress goes to stderr so that stdout holds only the result.
            session.io.stderr.write(`${p.status}: ${mebibytes(p.transferredBytes)} of ${mebibytes(p.totalBytes)} sent, ${mebibytes(p.remainingBytes)} left (${p.elapsedMs} ms)\n`);
          } else if (kind?.$case === 'result') {
            const r = kind.value;
            printer.result({ id, snapshotId: r.snapshotId, bytes: r.bytes, durationMs: r.durationMs }, (v) =>
              renderDetails([
                ['Workload', v.id],
                ['Snapshot', v.snapshotId],
                ['Size', mebibytes(v.bytes)],
                ['Took', `${v.durationMs} ms`],
              ]),
            );
          }
        }
      } finally {
        process.removeListener('SIGINT', onInterrupt);
      }
    });

  workloads
    .command('restore')
    .argument('<id>', 'the workload the snapshot was taken of')
    .argument('<snapshot>', 'snapshot id, as `workloads snapshot` printed it')
    .option('--name <name>', 'name of the new workload (default: <name>-restored)')
    .description('start a new workload from a snapshot, on the host that holds it')
    .action(async (id: string, snapshotId: string, options: { name?: string }, command: Command) => {
      const res = await session.client(command).restoreWorkload({ id, snapshotId, name: options.name ?? '' });
      session.printer(command).result(workloadView(present(res.workload)), workloadDetails);
    });

  workloads
    .command('snapshots')
    .argument('<id>', 'workload id')
    .description("list a workload's memory snapshots (oldest first), with the host storage each takes")
    .action(async (id: string, _options, command: Command) => {
      const res = await session.client(command).listWorkloadSnapshots({ id });
      // The same shape as REST's GET /v1/workloads/{id}/snapshots.
      const snapshots = res.snapshots.map((s) => ({
        id: s.snapshotId,
        sourceWorkloadId: s.sourceWorkloadId,
        createdAt: s.createdAt ? s.createdAt.toISOString() : null,
        sizeBytes: s.sizeBytes,
        driver: s.driver,
      }));
      session.printer(command).result({ snapshots }, ({ snapshots: rows }) =>
        renderTable(rows, [
          { header: 'SNAPSHOT', value: (s) => s.id },
          { header: 'CREATED', value: (s) => s.createdAt ?? '' },
          { header: 'SIZE', value: (s) => mebibytes(s.sizeBytes) },
          { header: 'DRIVER', value: (s) => s.driver },
        ]),
      );
    });

  workloads
    .command('snapshot-rm')
    .argument('<id>', 'the workload the snapshot was taken of')
    .argument('<snapshot>', 'snapshot id, as `workloads snapshots` lists it')
    .description('delete a memory snapshot from its host (deleting one already gone is fine)')
    .action(async (id: string, snapshotId: string, _options, command: Command) => {
      const res = await session.client(command).deleteWorkloadSnapshot({ id, snapshotId });
      session.printer(command).result({ id, snapshotId, deleted: res.deleted }, (v) => (v.deleted ? `deleted ${v.snapshotId}\n` : `${v.snapshotId} was already gone\n`));
    });

  // A purge stops (grace period), then the host removes the container or VM: allow it longer than other calls.
  const purgeDeadline = { deadlineMs: PURGE_DEADLINE_MS };

  workloads
    .command('stop')
    .argument('<id>', 'workload id')
    .option('--purge', 'also tear it down on its host (like `workloads rm --force`)')
    .description('stop a workload (stopping a stopped workload is fine)')
    .action(async (id: string, options: { purge?: boolean }, command: Command) => {
      const client = session.client(command);
      // A plain stop also waits out the grace period and the kill (the gateway allows it as long as a purge).
      const res = await client.deleteWorkload({ id, purge: options.purge ?? false }, purgeDeadline);
      session.printer(command).result(workloadView(present(res.workload)), workloadDetails);
    });

  workloads
    .command('rm')
    .alias('remove')
    .argument('<id>', 'workload id')
    .option('--force', 'stop it first if it still runs')
    .description('tear a stopped workload down: its container or VM, volume, ports and logs go, and it is retired (removing a retired workload is fine)')
    .action(async (id: string, options: { force?: boolean }, command: Command) => {
      const client = session.client(command);
      if (!options.force) {
        // The API's purge always stops first; without --force a live workload is left alone.
        const current = workloadView(present((await client.getWorkload({ id })).workload));
        if (!AT_REST.has(current.state)) throw new Error(`workload ${id} is ${current.state}: stop it first, or use --force`);
      }
      const res = await client.deleteWorkload({ id, purge: true }, purgeDeadline);
      session.printer(command).result(workloadView(present(res.workload)), workloadDetails);
    });
}

/** States in which nothing of a workload runs any more. */
const AT_REST: ReadonlySet<string> = new Set(['stopped', 'failed', 'tearing_down', 'retired']);
/** The gateway allows a purge 60 s; a little more here, so its own answer arrives. */
const PURGE_DEADLINE_MS = 75_000;
