import type { Command } from 'commander';
import { fleetHealthView } from '@corral/domain';
import type { hostRegistryV1 } from '@corral/proto';
import { renderDetails, renderTable } from '../output/printer';
import { positiveInteger } from './parsers';
import { hostView, type HostView } from '../output/views';
import type { Session } from '../session';

const driversText = (h: HostView) => h.drivers.map((d) => (d.healthy ? d.name : `${d.name}(unhealthy)`)).join(',');

function presentHost(host: hostRegistryV1.Host | undefined): hostRegistryV1.Host {
  if (!host) throw new Error('the gateway answered without a host');
  return host;
}

const statusLine = (verb: string) => (h: HostView) => `host ${h.id} (${h.name}) ${verb}: ${h.status}\n`;

export function registerHosts(program: Command, session: Session): void {
  const hosts = program.command('hosts').description('the hosts workloads run on');

  hosts
    .command('list')
    .alias('ls')
    .description('list the hosts you can see')
    .action(async (_options, command: Command) => {
      const res = await session.client(command).listHosts({});
      const views = res.hosts.map(hostView);
      session.printer(command).result({ hosts: views }, ({ hosts: rows }) =>
        renderTable(rows, [
          { header: 'ID', value: (h) => h.id },
          { header: 'NAME', value: (h) => h.name },
          { header: 'STATUS', value: (h) => h.status },
          { header: 'TEAM', value: (h) => h.teamId ?? '' },
          { header: 'CPU', value: (h) => `${h.resources.usage.cpuMillis}/${h.resources.capacity.cpuMillis}m` },
          { header: 'MEMORY', value: (h) => `${h.resources.usage.memoryMb}/${h.resources.capacity.memoryMb}MB` },
          { header: 'DRIVERS', value: driversText },
          { header: 'LAST HEARTBEAT', value: (h) => h.lastHeartbeatAt ?? '' },
        ]),
      );
    });

  hosts
    .command('get')
    .argument('<id>', 'host id')
    .description('show one host')
    .action(async (id: string, _options, command: Command) => {
      const res = await session.client(command).getHost({ id });
      if (!res.host) throw new Error('the gateway answered without a host');
      session.printer(command).result(hostView(res.host), (h) =>
        renderDetails([
          ['ID', h.id],
          ['Name', h.name],
          ['Status', h.status],
          ['Team', h.teamId],
          ['CPU', `${h.resources.usage.cpuMillis}/${h.resources.capacity.cpuMillis} millicores`],
          ['Memory', `${h.resources.usage.memoryMb}/${h.resources.capacity.memoryMb} MB`],
          ['Disk', `${h.resources.usage.diskMb}/${h.resources.capacity.diskMb} MB`],
          ['Drivers', driversText(h)],
          ['Labels', Object.entries(h.labels).map(([k, v]) => `${k}=${v}`).join(',')],
          ['Last heartbeat', h.lastHeartbeatAt],
          ['Registered', h.createdAt],
        ]),
      );
    });

  hosts
    .command('drain')
    .argument('<id>', 'host id')
    .description('take no new placements on a host; what runs there keeps running (unless --migrate)')
    .option('--migrate', "then move the host's live workloads to other hosts: each replacement runs before its original is retired")
    .option('--max-parallel <n>', 'with --migrate: workloads moved at once', positiveInteger, 1)
    .action(async (id: string, options: { migrate?: boolean; maxParallel: number }, command: Command) => {
      const res = await session.client(command).drainHost({ id, migrate: options.migrate === true, maxParallel: options.maxParallel });
      const host = hostView(presentHost(res.host));
      if (!options.migrate) {
        session.printer(command).result(host, statusLine('drained'));
        return;
      }
      const migrations = res.migrations.map((m) => ({ workloadId: m.workloadId, name: m.name, outcome: m.outcome, replacementId: m.replacementId || null, toHostId: m.toHostId || null, reason: m.reason }));
      session.printer(command).result({ ...host, migrations }, (v) => {
        const lines = [statusLine('drained')(v).trimEnd()];
        if (v.migrations.length === 0) lines.push('no live workloads to move');
        for (const m of v.migrations) {
          lines.push(m.outcome === 'moved' ? `moved ${m.workloadId} (${m.name}) -> ${m.replacementId} on ${m.toHostId}` : `FAILED ${m.workloadId} (${m.name}): ${m.reason}`);
        }
        return lines.join('\n') + '\n';
      });
      // A workload left behind is the operator's to look at: say so in the exit code.
      if (migrations.some((m) => m.outcome !== 'moved')) session.exitCode = 1;
    });

  hosts
    .command('undrain')
    .argument('<id>', 'host id')
    .description('let a drained host take placements again')
    .action(async (id: string, _options, command: Command) => {
      const res = await session.client(command).undrainHost({ id });
      session.printer(command).result(hostView(presentHost(res.host)), statusLine('undrained'));
    });

  hosts
    .command('delete')
    .alias('rm')
    .argument('<id>', 'host id')
    .description('remove a host from the fleet; refused while workloads live there unless --force')
    .option('--force', 'drain the host and stop its workloads first, then delete it')
    .action(async (id: string, options: { force?: boolean }, command: Command) => {
      const res = await session.client(command).deleteHost({ id, force: options.force === true });
      const view = {
        id: res.id,
        deletedNow: res.deletedNow,
        affectedWorkloads: res.affectedWorkloadIds,
        stoppedWorkloads: res.stoppedWorkloadIds,
        unreachableWorkloads: res.unreachableWorkloadIds,
      };
      session.printer(command).result(view, (v) => {
        const lines = [v.deletedNow ? `host ${v.id} deleted` : `host ${v.id} was already deleted`];
        if (v.stoppedWorkloads.length) lines.push(`stopped ${v.stoppedWorkloads.length} workload(s): ${v.stoppedWorkloads.join(', ')}`);
        if (v.unreachableWorkloads.length) lines.push(`could not reach the host to stop: ${v.unreachableWorkloads.join(', ')}`);
        return lines.join('\n') + '\n';
      });
    });

  hosts
    .command('health')
    .description("fleet failure detection: the monitor's brake and heartbeat intake (admin keys)")
    .action(async (_options, command: Command) => {
      const res = await session.client(command).getFleetHealth({});
      if (!res.health) throw new Error('the gateway answered without fleet health');
      session.printer(command).result(fleetHealthView(res.health), (h) =>
        renderDetails([
          ['Brake', h.brake.active ? `ON (${h.brake.reasons.join(', ')}) since ${h.brake.since ?? '?'}` : 'off'],
          ['Brake detail', h.brake.detail],
          ['Hosts', Object.entries(h.hostsByStatus).map(([status, n]) => `${n} ${status}`).join(', ')],
          ['Leader', h.leader ? 'this replica' : 'another replica'],
          ['Epoch', h.epoch],
          ['Last check', h.lastCheckAt],
          ['Bus', h.busConnected ? 'connected' : 'DISCONNECTED'],
          ['Database', h.databaseHealthy ? 'healthy' : 'UNHEALTHY'],
          ['Heartbeats', `${h.heartbeats.received} received, ${h.heartbeats.applied} applied, ${h.heartbeats.dropped} dropped`],
          ['Latency', `p50 ${h.heartbeats.latencyP50Ms} ms, p99 ${h.heartbeats.latencyP99Ms} ms; flush p99 ${h.heartbeats.flushP99Ms} ms`],
        ]),
      );
    });
}
