import type { Command } from 'commander';
import { renderDetails, renderTable } from '../output/printer';
import { hostView, type HostView } from '../output/views';
import type { Session } from '../session';

const driversText = (h: HostView) => h.drivers.map((d) => (d.healthy ? d.name : `${d.name}(unhealthy)`)).join(',');

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
}
