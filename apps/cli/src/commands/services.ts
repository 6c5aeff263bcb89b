import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { schedulerV1 } from '@corral/proto';
import { renderDetails, renderTable } from '../output/printer';
import { workloadView } from '../output/views';
import type { Session } from '../session';

// `corral service plan|deploy|status|list|stop|rm|purge`: service
// definitions (TOML files) deployed over the public gRPC API. `deploy
// --wait` follows the rollout (its events on stderr) and exits 1 unless it
// succeeded.

const POLL_MS = 500;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const iso = (d: Date | undefined) => (d ? d.toISOString() : null);

function deploymentJson(d: schedulerV1.ServiceDeployment | undefined) {
  if (!d) return null;
  return { id: d.id, fromVersion: d.fromVersion, toVersion: d.toVersion, state: d.state, reason: d.reason || null, stepsTotal: d.stepsTotal, stepsDone: d.stepsDone, events: d.events, updatedAt: iso(d.updatedAt) };
}

function serviceJson(s: schedulerV1.Service) {
  return {
    id: s.id,
    name: s.name,
    teamId: s.teamId || null,
    currentVersion: s.currentVersion,
    state: s.state,
    versions: s.versions.map((v) => ({ version: v.version, status: v.status, digest: v.digest, createdAt: iso(v.createdAt) })),
    instances: s.instances.map((i) => ({
      component: i.component,
      index: i.index,
      version: i.version,
      workloadId: i.workload?.id ?? null,
      state: i.workload ? workloadView(i.workload).state : null,
      hostId: i.workload?.hostId || null,
      ports: (i.workload?.ports ?? []).map((p) => ({ name: p.name, guestPort: p.guestPort, hostPort: p.hostPort, protocol: p.protocol })),
    })),
    latestDeployment: deploymentJson(s.latestDeployment),
    components: s.components.map((c) => ({ name: c.name, state: c.state, lastVersion: c.lastVersion })),
  };
}

type ServiceJson = ReturnType<typeof serviceJson>;

function renderService(s: ServiceJson): string {
  const d = s.latestDeployment;
  const head = renderDetails([
    ['Service', s.name],
    ['State', s.state],
    ['Version', String(s.currentVersion)],
    ['Rollout', d ? `${d.state} v${d.fromVersion} → v${d.toVersion} (${d.stepsDone}/${d.stepsTotal})${d.reason ? `: ${d.reason}` : ''}` : ''],
  ]);
  const instances = renderTable(s.instances, [
    { header: 'COMPONENT', value: (i) => `${i.component}[${i.index}]` },
    { header: 'VERSION', value: (i) => String(i.version) },
    { header: 'WORKLOAD', value: (i) => i.workloadId ?? '' },
    { header: 'STATE', value: (i) => i.state ?? '' },
    { header: 'HOST', value: (i) => i.hostId ?? '' },
    { header: 'PORTS', value: (i) => i.ports.map((p) => `${p.name}:${p.hostPort}->${p.guestPort}`).join(',') },
  ]);
  return `${head}\n${instances}`;
}

function renderPlan(plan: schedulerV1.ServicePlan): string {
  return `${plan.summary.join('\n')}\n`;
}

export function registerServices(program: Command, session: Session): void {
  const service = program.command('service').alias('services').description('services deployed from TOML definitions');

  service
    .command('plan')
    .description('show what deploying a definition would change')
    .argument('<file>', 'the service definition (TOML)')
    .action(async (file: string, _options: unknown, command: Command) => {
      const definitionToml = await readFile(file, 'utf8');
      const res = await session.client(command).planService({ definitionToml });
      const plan = res.plan as schedulerV1.ServicePlan;
      session.printer(command).result(plan, renderPlan);
    });

  service
    .command('deploy')
    .description('deploy a definition as the next version of its service')
    .argument('<file>', 'the service definition (TOML)')
    .option('--wait', 'follow the rollout until it ends (exit 1 unless it succeeded)')
    .action(async (file: string, options: { wait?: boolean }, command: Command) => {
      const definitionToml = await readFile(file, 'utf8');
      const client = session.client(command);
      const res = await client.deployService({ definitionToml, wait: false });
      const plan = res.plan as schedulerV1.ServicePlan;
      let current = res.service as schedulerV1.Service;
      const deployment = res.deployment;
      session.io.stderr.write(`${plan.summary.join('\n')}\n`);
      if (options.wait && deployment && deployment.state === 'running') {
        let shown = 0;
        for (;;) {
          current = (await client.getService({ name: current.name })).service as schedulerV1.Service;
          const d = current.latestDeployment;
          if (!d || d.id !== deployment.id) break;
          for (const line of d.events.slice(shown)) session.io.stderr.write(`${line}\n`);
          shown = d.events.length;
          if (d.state !== 'running') break;
          await sleep(POLL_MS);
        }
        const ended = current.latestDeployment;
        if (ended && ended.id === deployment.id && ended.state !== 'succeeded') session.exitCode = 1;
      }
      session.printer(command).result(serviceJson(current), renderService);
    });

  service
    .command('status')
    .description('a service: versions, instances with hosts and ports, the latest rollout')
    .argument('<name>', 'the service')
    .action(async (name: string, _options: unknown, command: Command) => {
      const res = await session.client(command).getService({ name });
      session.printer(command).result(serviceJson(res.service as schedulerV1.Service), renderService);
    });

  service
    .command('list')
    .alias('ls')
    .description('list services')
    .action(async (_options: unknown, command: Command) => {
      const res = await session.client(command).listServices({});
      const rows = res.services.map(serviceJson);
      session.printer(command).result({ services: rows }, ({ services }) =>
        renderTable(services, [
          { header: 'NAME', value: (s) => s.name },
          { header: 'STATE', value: (s) => s.state },
          { header: 'VERSION', value: (s) => String(s.currentVersion) },
          { header: 'ROLLOUT', value: (s) => (s.latestDeployment ? `${s.latestDeployment.state} (v${s.latestDeployment.toVersion})` : '') },
        ]),
      );
    });

  // Commands that take the service's name and answer with the service.
  const byName = [
    { verb: 'stop', description: 'stop every instance (the service and its definition stay)', call: 'stopService' },
    { verb: 'rm', description: 'undeploy: stop and tear down every instance, mark the service removed', call: 'undeployService' },
  ] as const;
  for (const { verb, description, call } of byName) {
    service
      .command(verb)
      .description(description)
      .argument('<name>', 'the service')
      .action(async (name: string, _options: unknown, command: Command) => {
        const res = await session.client(command)[call]({ name });
        session.printer(command).result(serviceJson(res.service as schedulerV1.Service), renderService);
      });
  }

  service
    .command('purge')
    .description('remove components that are gone and in no current definition (and the service with its last)')
    .argument('<name>', 'the service')
    .option('--dry-run', 'only list what would be purged')
    .action(async (name: string, options: { dryRun?: boolean }, command: Command) => {
      const res = await session.client(command).purgeComponents({ name, dryRun: options.dryRun === true });
      const view = { dryRun: res.dryRun, purged: res.purged.map((p) => ({ ...p })), refused: res.refused.map((p) => ({ ...p })), serviceDeleted: res.serviceDeleted };
      session.printer(command).result(view, (v) => {
        const verb = v.dryRun ? 'would purge' : 'purged';
        const lines = [
          ...v.purged.map((p) => `${verb} ${p.name}: ${p.reason}`),
          ...v.refused.map((p) => `kept ${p.name}: ${p.reason}`),
          ...(v.serviceDeleted ? [`${v.dryRun ? 'would delete' : 'deleted'} service ${name}`] : []),
        ];
        return `${lines.length > 0 ? lines.join('\n') : 'nothing to purge'}\n`;
      });
    });
}
