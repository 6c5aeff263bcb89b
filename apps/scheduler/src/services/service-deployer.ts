import { randomUUID } from 'node:crypto';
import {
  FailedPreconditionError,
  PermissionDeniedError,
  componentGroup,
  componentPlacementRequest,
  definitionDigest,
  infeasibility,
  isCorralError,
  parseServiceDefinition,
  planServiceChange,
  runtimeDriver,
  validateWorkloadSpec,
  type ComponentDefinition,
  type InstanceState,
  type ServiceDefinition,
  type ServicePlan,
  type WorkloadSpec,
} from '@corral/domain';
import type { Deployment as DeploymentRow, Service as ServiceRow, Workload as WorkloadRow } from '@corral/db';
import type { Logger } from '@corral/logging';
import type { DirectoryHost, HostDirectory } from '../hosts/host-directory';
import type { ServiceMembership } from '../workloads/workload-store';
import { portsOf } from '../workloads/workload-store';
import type { WorkloadService } from '../workloads/workload-service';
import type { HealthProbe } from './health-probe';
import { SERVICE_PLACEMENT_STRATEGY, type PlacementPort } from './placement-port';
import { decideOnFailure, healthVerdict, planRollout, stepCount, type GatedStep, type ServiceInstanceRecord } from './rollout';
import type { SecretResolver } from './secret-resolver';
import { instanceRecord, type ServiceStore } from './service-store';
import { SERVICE_STATE_FIELD } from './service-errors';

// Service deploys: plan (a pure diff against the deployed version), deploy
// (a new version and a rollout to it: creates, health-gated rolling
// replacements `max_parallel` at a time, then removals; on failure back to
// the previous version), stop, undeploy and purge. A batch's instances are
// recorded as intent rows inside the placement's transaction (under the
// chosen hosts' locks, all or none) before any agent is asked, like any
// workload, then started through WorkloadService.startRecorded.

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: Clock = { now: () => Date.now(), sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)) };

export interface ServiceDeployerDeps {
  store: ServiceStore;
  workloads: WorkloadService;
  hosts: HostDirectory;
  placement: PlacementPort;
  health: HealthProbe;
  secrets: SecretResolver;
  logger: Logger;
  clock?: Clock;
  stopTimeoutSeconds?: number;
  /** A running rollout untouched this long is taken over by another replica (it touches its row every third of it). */
  rolloutLeaseMs?: number;
}

export interface DeployResult {
  service: ServiceRow;
  deployment: DeploymentRow | null;
  plan: ServicePlan;
}

export interface PurgeResult {
  dryRun: boolean;
  purged: { name: string; reason: string }[];
  refused: { name: string; reason: string }[];
  serviceDeleted: boolean;
}

/** States in which a workload may still run or be started again. */
const LIVE: ReadonlySet<string> = new Set<InstanceState>(['pending', 'provisioning', 'running', 'paused', 'stopping', 'missing', 'tearing_down']);
/** How often an instance that is not running yet is looked at while waiting for it. */
const STARTING_POLL_MS = 250;
/** How often a batch that fits nowhere is placed again (until the component's health deadline). */
const PLACEMENT_RETRY_MS = 1000;
/** Without a health check, an instance must be seen running twice this far apart (it did not exit at once). */
const NO_CHECK_SETTLE_MS = 1000;
/** A rollout's lease: three missed heartbeats and another scheduler replica takes it over. */
export const DEFAULT_ROLLOUT_LEASE_MS = 30_000;

interface RolloutContext {
  service: ServiceRow;
  deploymentId: string;
  teamId: string | null;
}

type BatchOutcome = { ok: true } | { ok: false; reason: string; component: ComponentDefinition };

/** `<service>-<component>-<index>`, shortened to a valid workload name. */
export function instanceName(service: string, component: string, index: number): string {
  const tail = `-${component}-${index}`;
  const head = service.slice(0, Math.max(1, 63 - tail.length)).replace(/-+$/, '');
  return `${head}${tail}`.slice(0, 63).replace(/-+$/, '');
}

/** The workload spec of one instance of a component. */
export function instanceSpec(service: string, component: ComponentDefinition, index: number, secretValues: Record<string, string>): WorkloadSpec {
  const vm =
    component.runtime === 'microvm'
      ? { mode: 'microvm', ...(component.kernel ? { kernel: component.kernel } : {}), ...(component.initrd ? { initrd: component.initrd } : {}) }
      : component.runtime === 'unikernel'
        ? { mode: 'unikernel' }
        : undefined;
  return validateWorkloadSpec({
    name: instanceName(service, component.name, index),
    driver: runtimeDriver(component.runtime),
    ...(component.command ? { command: component.command } : {}),
    env: { ...component.env, ...secretValues },
    ...(component.image ? { image: component.image } : {}),
    resources: { vcpus: component.resources.vcpus, memoryMb: component.resources.memoryMb },
    routes: component.routes.map((r) => ({ name: r.name, port: r.port, protocol: r.protocol })),
    ...(vm ? { vm } : {}),
  });
}

function membershipOf(serviceId: string, version: number, component: ComponentDefinition, index: number): ServiceMembership {
  return {
    serviceId,
    componentName: component.name,
    serviceVersion: version,
    instanceIndex: index,
    restartPolicy: { ...component.restart },
    ...(component.health ? { healthCheck: { ...component.health } as Record<string, unknown> } : {}),
  };
}

const slot = (component: string, index: number) => `${component}[${index}]`;

export class ServiceDeployer {
  private readonly clock: Clock;
  private readonly rollouts = new Map<string, Promise<void>>();
  private readonly leaseMs: number;

  constructor(private readonly deps: ServiceDeployerDeps) {
    this.clock = deps.clock ?? realClock;
    this.leaseMs = deps.rolloutLeaseMs ?? DEFAULT_ROLLOUT_LEASE_MS;
  }

  /** What deploying `toml` would change; nothing is recorded. */
  async plan(teamId: string | null, toml: string): Promise<{ plan: ServicePlan; fromVersion: number }> {
    const definition = parseServiceDefinition(toml);
    this.authorize(teamId, definition);
    const { current, version } = await this.deployed(teamId, definition.name);
    return { plan: planServiceChange(current, definition), fromVersion: version };
  }

  /**
   * Records the definition as the next version and starts the rollout to it;
   * with `wait`, answers once the rollout has ended. Deploying what already
   * runs changes nothing.
   */
  async deploy(teamId: string | null, toml: string, options: { wait?: boolean } = {}): Promise<DeployResult> {
    const definition = parseServiceDefinition(toml);
    this.authorize(teamId, definition);
    // Refused before anything is recorded: no half-deployed service for want of a secret.
    for (const c of definition.components) await this.deps.secrets.resolve({ teamId, service: definition.name, component: c.name, names: c.secrets });

    const { current, version: currentVersion, service: existing } = await this.deployed(teamId, definition.name);
    const plan = planServiceChange(current, definition);
    if (existing && plan.action === 'unchanged' && existing.state === 'running') {
      return { service: existing, deployment: await this.deps.store.latestDeployment(existing.id), plan };
    }

    const begun = await this.deps.store.beginDeployment(teamId, definition, toml, definitionDigest(definition));
    this.deps.logger.info('service rollout started', { service: definition.name, serviceId: begun.service.id, deploymentId: begun.deployment.id, from: currentVersion, to: begun.version.version });
    const context: RolloutContext = { service: begun.service, deploymentId: begun.deployment.id, teamId };
    const run = this.launch(context, begun.version.version, begun.previousVersion);
    if (options.wait) await run;
    const service = await this.deps.store.find(teamId, definition.name);
    return { service, deployment: await this.deps.store.latestDeployment(service.id), plan };
  }

  /**
   * Continues the rollouts whose scheduler went away (lease expired), each
   * claimed by exactly one replica. The plan is recomputed from the target
   * definition and the live instances, so what the dead process finished is
   * kept and what it left half-done is redone or removed.
   */
  async resumeAbandoned(): Promise<string[]> {
    const claimed = await this.deps.store.claimAbandonedRollouts(this.leaseMs);
    for (const deployment of claimed) {
      if (this.rollouts.has(deployment.id)) continue;
      const context: RolloutContext = { service: deployment.service, deploymentId: deployment.id, teamId: deployment.service.teamId };
      this.deps.logger.warn('service rollout taken over', { serviceId: deployment.serviceId, deploymentId: deployment.id, from: deployment.fromVersion, to: deployment.toVersion });
      await this.event(context, `taken over by another scheduler (the previous one stopped moving); resuming the rollout to version ${deployment.toVersion}`);
      // Intent rows the dead process wrote but never sent to an agent: failed, so the recomputed plan replaces them.
      for (const row of await this.deps.store.instances(deployment.serviceId)) {
        if (row.state === 'pending') await this.deps.workloads.abandonRecorded(row.id, 'its rollout was taken over before it was started');
      }
      void this.launch(context, deployment.toVersion, deployment.fromVersion, { resumed: true });
    }
    return claimed.map((d) => d.id);
  }

  /** Sweeps for abandoned rollouts now and every `intervalMs`; the returned function stops it. */
  watchAbandoned(intervalMs = this.leaseMs / 3): () => void {
    let sweeping = false;
    const sweep = () => {
      if (sweeping) return;
      sweeping = true;
      this.resumeAbandoned()
        .catch((err) => this.deps.logger.error('sweeping for abandoned rollouts failed', { err }))
        .finally(() => (sweeping = false));
    };
    sweep();
    const timer = setInterval(sweep, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** Resolves once every rollout this process runs has ended (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.rollouts.size > 0) await Promise.all([...this.rollouts.values()]);
  }

  /** Stops every instance; the service and its definition stay. Idempotent. */
  async stop(teamId: string | null, name: string, timeoutSeconds?: number): Promise<ServiceRow> {
    const service = await this.deps.store.find(teamId, name);
    await this.refuseDuringRollout(service, 'stop');
    for (const row of await this.deps.store.instances(service.id)) {
      if (!LIVE.has(row.state) || row.state === 'tearing_down') continue;
      await this.deps.workloads.stop(row.id, null, timeoutSeconds || this.deps.stopTimeoutSeconds);
    }
    return service.state === 'removed' ? service : this.deps.store.setState(service.id, 'stopped');
  }

  /** Stops and tears down every instance and marks the service removed. Idempotent. */
  async undeploy(teamId: string | null, name: string, timeoutSeconds?: number): Promise<ServiceRow> {
    const service = await this.deps.store.find(teamId, name);
    await this.refuseDuringRollout(service, 'undeploy');
    for (const row of await this.deps.store.instances(service.id)) {
      await this.deps.workloads.destroy(row.id, null, { force: true, timeoutSeconds: timeoutSeconds || this.deps.stopTimeoutSeconds });
    }
    return this.deps.store.setState(service.id, 'removed');
  }

  /**
   * Removes registry entries of components that are gone (no workload that
   * runs or could run again) and unwanted (in no current definition).
   * Components with running or stopped workloads are refused. The service
   * goes with its last component. `dryRun` changes nothing.
   */
  async purge(teamId: string | null, name: string, dryRun: boolean): Promise<PurgeResult> {
    const service = await this.deps.store.find(teamId, name);
    await this.refuseDuringRollout(service, 'purge');
    const current = service.state === 'removed' || service.currentVersion === 0 ? undefined : await this.deps.store.definition(service.id, service.currentVersion);
    const wanted = new Set((current?.components ?? []).map((c) => c.name));
    const purged: PurgeResult['purged'] = [];
    const refused: PurgeResult['refused'] = [];
    const entries = await this.deps.store.components(service.id);
    for (const entry of entries) {
      if (wanted.has(entry.name)) {
        refused.push({ name: entry.name, reason: `in the current definition (version ${service.currentVersion})` });
        continue;
      }
      const rows = await this.deps.store.componentWorkloads(service.id, entry.name);
      const live = rows.filter((w) => LIVE.has(w.state));
      const stopped = rows.filter((w) => w.state === 'stopped');
      if (live.length > 0) {
        refused.push({ name: entry.name, reason: `${live.length} workload(s) still running or starting: ${live.map((w) => w.id).join(', ')}` });
        continue;
      }
      if (stopped.length > 0) {
        refused.push({ name: entry.name, reason: `${stopped.length} stopped workload(s) not torn down yet (undeploy the service or destroy them): ${stopped.map((w) => w.id).join(', ')}` });
        continue;
      }
      const retired = rows.filter((w) => w.state === 'retired').length;
      const failed = rows.filter((w) => w.state === 'failed').length;
      purged.push({ name: entry.name, reason: `in no current definition; ${retired} retired, ${failed} failed workload(s)` });
    }
    const serviceDeleted = purged.length === entries.length && !current;
    if (!dryRun) {
      for (const p of purged) await this.deps.store.purgeComponent(service.id, p.name);
      if (serviceDeleted) await this.deps.store.deleteService(service.id);
      this.deps.logger.info('service components purged', { serviceId: service.id, purged: purged.map((p) => p.name), serviceDeleted });
    }
    return { dryRun, purged, refused, serviceDeleted };
  }

  // -------------------------------------------------------------------------

  /** Runs a rollout in the background, keeping its lease while it runs. */
  private launch(context: RolloutContext, targetVersion: number, previousVersion: number, options: { resumed?: boolean } = {}): Promise<void> {
    // Health waits and placement retries can go long without progress: the heartbeat keeps the row fresh regardless.
    const heartbeat = setInterval(() => {
      this.deps.store.touchRollout(context.deploymentId).catch((err) => this.deps.logger.warn('rollout heartbeat failed', { deploymentId: context.deploymentId, err }));
    }, Math.max(1, Math.floor(this.leaseMs / 3)));
    heartbeat.unref();
    const run = this.execute(context, targetVersion, previousVersion, options.resumed ?? false)
      .catch((err) => this.deps.logger.error('service rollout crashed', { serviceId: context.service.id, deploymentId: context.deploymentId, err }))
      .finally(() => {
        clearInterval(heartbeat);
        this.rollouts.delete(context.deploymentId);
      });
    this.rollouts.set(context.deploymentId, run);
    return run;
  }

  private authorize(teamId: string | null, definition: ServiceDefinition): void {
    for (const [i, c] of definition.components.entries()) {
      if (teamId !== null && c.placement.team !== undefined && c.placement.team !== teamId) {
        throw new PermissionDeniedError(`components[${i}].placement.team: a team may only place on its own hosts`);
      }
    }
  }

  private async deployed(teamId: string | null, name: string): Promise<{ service: ServiceRow | null; current: ServiceDefinition | undefined; version: number }> {
    const service = await this.deps.store.findOrNull(teamId, name);
    if (!service || service.state === 'removed' || service.currentVersion === 0) return { service, current: undefined, version: 0 };
    return { service, current: await this.deps.store.definition(service.id, service.currentVersion), version: service.currentVersion };
  }

  private async refuseDuringRollout(service: ServiceRow, what: string): Promise<void> {
    const running = await this.deps.store.activeRollout(service.id);
    if (running) throw new FailedPreconditionError(`cannot ${what} service ${service.name} while it is being rolled out (deployment ${running.id})`, { field: SERVICE_STATE_FIELD });
  }

  private event(context: RolloutContext, text: string, change: { addTotal?: number; addDone?: number } = {}) {
    this.deps.logger.info('service rollout', { serviceId: context.service.id, deploymentId: context.deploymentId, event: text });
    return this.deps.store.progress(context.deploymentId, { ...change, event: text });
  }

  /** The whole rollout, with the revert decision and the final records. */
  private async execute(context: RolloutContext, targetVersion: number, previousVersion: number, resumed: boolean): Promise<void> {
    const outcome = await this.rollTo(context, targetVersion, resumed).catch((err): BatchOutcome | { ok: false; reason: string; component?: undefined } => ({
      ok: false,
      reason: isCorralError(err) ? err.message : 'internal error',
    }));
    const { store } = this.deps;
    const target = (await store.definition(context.service.id, targetVersion)) as ServiceDefinition;
    if (outcome.ok) {
      await this.event(context, `version ${targetVersion} is live`);
      await store.succeed(context.service.id, context.deploymentId, targetVersion, target.components.map((c) => c.name));
      return;
    }
    const component = outcome.component ?? target.components[0];
    const decision = decideOnFailure({ component, previousVersion, reverting: false, failure: outcome.reason });
    const previous = previousVersion > 0 ? await store.definition(context.service.id, previousVersion) : undefined;
    const previousComponents = (previous?.components ?? []).map((c) => c.name);
    if (decision.action === 'halt') {
      await this.event(context, `rollout halted: ${decision.reason}`);
      if (previousVersion === 0) await this.removeInstancesOf(context, targetVersion, 'the first rollout failed');
      await store.fail(context.service.id, context.deploymentId, targetVersion, { reverted: false, reason: decision.reason, currentVersion: previousVersion, currentComponents: previousComponents });
      return;
    }
    await this.event(context, decision.reason);
    const back = await this.rollTo(context, decision.toVersion).catch((err): { ok: false; reason: string } => ({ ok: false, reason: isCorralError(err) ? err.message : 'internal error' }));
    if (back.ok) {
      await this.event(context, `reverted to version ${decision.toVersion}`);
      await store.fail(context.service.id, context.deploymentId, targetVersion, { reverted: true, reason: outcome.reason, currentVersion: previousVersion, currentComponents: previousComponents });
    } else {
      const halted = decideOnFailure({ component, previousVersion, reverting: true, failure: back.reason });
      await this.event(context, `rollout halted: ${halted.reason}`);
      await store.fail(context.service.id, context.deploymentId, targetVersion, { reverted: false, reason: `${outcome.reason}; ${halted.reason}`, currentVersion: previousVersion, currentComponents: previousComponents });
    }
  }

  /**
   * Brings the service's instances to `version`: adopt, health-gated batches,
   * removals. `resumed` (taken over from a dead scheduler): the instances of
   * `version` it had started are health-checked again before anything else,
   * since whether they passed died with it.
   */
  private async rollTo(context: RolloutContext, version: number, resumed = false): Promise<BatchOutcome> {
    const { store } = this.deps;
    const serviceId = context.service.id;
    const target = await store.definition(serviceId, version);
    if (!target) throw new FailedPreconditionError(`version ${version} of service ${context.service.name} is unknown`, { field: SERVICE_STATE_FIELD });
    const definitions = new Map<number, ServiceDefinition | undefined>([[version, target]]);
    const instances = (await store.instances(serviceId)).map(instanceRecord);
    for (const v of new Set(instances.map((i) => i.version))) if (!definitions.has(v)) definitions.set(v, await store.definition(serviceId, v));
    const fleet = new Map((await this.deps.hosts.list(context.teamId)).map((h) => [h.id, h]));
    const plan = planRollout({
      target,
      targetVersion: version,
      instances,
      definitionOf: (v) => definitions.get(v),
      hostFits: (instance, component) => {
        const host = instance.hostId ? fleet.get(instance.hostId) : undefined;
        if (!host) return false;
        const reason = infeasibility(host, { ...componentPlacementRequest(target, component, context.teamId), resources: undefined });
        return reason === undefined || reason === 'not-online';
      },
    });
    await this.event(context, `rolling to version ${version}: ${plan.adopt.length} kept, ${plan.batches.reduce((n, b) => n + b.length, 0)} to start in ${plan.batches.length} batch(es), ${plan.remove.length} to remove`, { addTotal: stepCount(plan) });

    const byName = new Map(target.components.map((c) => [c.name, c]));
    if (resumed) {
      const leaving = new Set([...plan.remove.map((r) => r.workloadId), ...plan.batches.flat().flatMap((b) => (b.kind === 'replace' ? [b.old] : []))]);
      for (const i of instances) {
        const component = byName.get(i.component);
        if (!component || i.version !== version || leaving.has(i.workloadId) || !['provisioning', 'running', 'missing'].includes(i.state) || !i.hostId) continue;
        const verdict = await this.awaitHealthy(i.workloadId, await this.deps.hosts.get(i.hostId), component);
        if (verdict !== undefined) return { ok: false, component, reason: `${slot(i.component, i.index)}: ${i.workloadId} ${verdict}` };
        await this.event(context, `${slot(i.component, i.index)}: ${i.workloadId} healthy (started before the takeover)`);
      }
    }
    for (const step of plan.adopt) {
      const c = byName.get(step.component) as ComponentDefinition;
      const m = membershipOf(serviceId, version, c, step.index);
      await store.adopt(step.workloadId, version, { restartPolicy: m.restartPolicy, healthCheck: m.healthCheck });
      await this.event(context, `${slot(step.component, step.index)}: ${step.workloadId} kept (version ${version})`, { addDone: 1 });
    }
    const secretValues = new Map<string, Record<string, string>>();
    for (const c of target.components) {
      secretValues.set(c.name, await this.deps.secrets.resolve({ teamId: context.teamId, service: target.name, component: c.name, names: c.secrets }));
    }
    for (const batch of plan.batches) {
      const outcome = await this.runBatch(context, target, version, batch, instances, secretValues);
      if (!outcome.ok) return outcome;
    }
    for (const step of plan.remove) {
      await this.retire(context, step.workloadId, `${slot(step.component, step.index)}: ${step.workloadId} removed (${step.why})`);
      await store.progress(context.deploymentId, { addDone: 1 });
    }
    return { ok: true };
  }

  private async runBatch(
    context: RolloutContext,
    target: ServiceDefinition,
    version: number,
    batch: GatedStep[],
    instances: ServiceInstanceRecord[],
    secretValues: Map<string, Record<string, string>>,
  ): Promise<BatchOutcome> {
    const component = target.components.find((c) => c.name === batch[0].component) as ComponentDefinition;
    // The reservation keys are the new workloads' ids: once a row is written it holds the resources, and the key is released.
    const keys = batch.map(() => randomUUID());
    const replaced = new Set(batch.flatMap((s) => (s.kind === 'replace' ? [s.old] : [])));
    const existing = instances
      .filter((i) => i.hostId && !replaced.has(i.workloadId) && LIVE.has(i.state))
      .map((i) => ({ hostId: i.hostId as string, group: componentGroup(target.name, i.component) }));
    const requests = batch.map(() => componentPlacementRequest(target, component, context.teamId));
    // A fleet that cannot take the batch now (a host silent for a moment, capacity about to be freed) may within the deadline.
    const placeBy = this.clock.now() + component.update.healthDeadlineSeconds * 1000;
    const specs = batch.map((step) => instanceSpec(target.name, component, step.index, secretValues.get(component.name) ?? {}));
    const whyOf = (i: number, reason: string) => `service ${target.name} v${version} ${slot(batch[i].component, batch[i].index)}: ${reason}`;
    // The batch's rows are written under the chosen hosts' locks, all or none: the rows are the reservation.
    const placeDurably = () =>
      this.deps.placement.place(requests, {
        strategy: SERVICE_PLACEMENT_STRATEGY,
        reservationKeys: keys,
        existing,
        allOrNothing: true,
        commit: async (tx, plan) => {
          for (const p of plan.placements) {
            const i = p.requestIndex;
            await this.deps.workloads.recordPlaced(tx, keys[i], specs[i], context.teamId, p.hostId, whyOf(i, p.reason), membershipOf(context.service.id, version, component, batch[i].index));
          }
        },
      });
    let placed = await placeDurably();
    while (placed.unplaced.length > 0) {
      this.deps.placement.release(keys);
      const first = placed.unplaced[0];
      const reason = `${slot(component.name, batch[first.requestIndex].index)}: no host: ${first.reason}`;
      if (this.clock.now() >= placeBy) return { ok: false, component, reason };
      await this.deps.store.progress(context.deploymentId, { event: `${reason}; retrying` });
      await this.clock.sleep(PLACEMENT_RETRY_MS);
      placed = await placeDurably();
    }

    const started: { step: GatedStep; row: WorkloadRow; host: DirectoryHost }[] = [];
    let failure: string | undefined;
    for (const placement of placed.placements) {
      const step = batch[placement.requestIndex];
      const id = keys[placement.requestIndex];
      let asked = false;
      try {
        const host = await this.deps.hosts.get(placement.hostId);
        asked = true;
        const row = await this.deps.workloads.startRecorded(id, specs[placement.requestIndex], context.teamId, host);
        started.push({ step, row, host });
        await this.event(context, `${slot(step.component, step.index)}: started ${row.id} on ${host.name}${step.kind === 'replace' ? ` to replace ${step.old} (${step.why})` : ''}`);
      } catch (err) {
        failure ??= `${slot(step.component, step.index)}: could not start: ${isCorralError(err) ? err.message : 'internal error'}`;
        // Its row was written with the placement: it must not hold the host's resources as a pending intent.
        if (!asked) await this.deps.workloads.abandonRecorded(id, failure).catch(() => undefined);
      } finally {
        this.deps.placement.release([keys[placement.requestIndex]]);
      }
    }

    if (!failure) {
      const verdicts = await Promise.all(started.map((s) => this.awaitHealthy(s.row.id, s.host, component)));
      const bad = verdicts.findIndex((v) => v !== undefined);
      if (bad >= 0) failure = `${slot(started[bad].step.component, started[bad].step.index)}: ${started[bad].row.id} ${verdicts[bad]}`;
    }
    if (failure) {
      await this.event(context, failure);
      // The batch's new instances go; the ones they were to replace were never touched.
      for (const s of started) await this.retire(context, s.row.id, `${slot(s.step.component, s.step.index)}: ${s.row.id} removed (its batch failed)`);
      return { ok: false, component, reason: failure };
    }
    // What later batches spread against: the new instances, not the ones they replaced.
    instances.push(...started.map((s) => instanceRecord(s.row)));
    for (const s of started) {
      if (s.step.kind === 'replace') {
        const step = s.step;
        await this.retire(context, step.old, `${slot(step.component, step.index)}: ${step.old} replaced by ${s.row.id}`);
        for (const i of instances) if (i.workloadId === step.old) i.state = 'retired';
      }
      await this.deps.store.progress(context.deploymentId, { addDone: 1, event: `${slot(s.step.component, s.step.index)}: ${s.row.id} healthy` });
    }
    return { ok: true };
  }

  /** Undefined once healthy; otherwise why not. */
  private async awaitHealthy(workloadId: string, host: DirectoryHost, component: ComponentDefinition): Promise<string | undefined> {
    const check = component.health;
    const deadline = this.clock.now() + component.update.healthDeadlineSeconds * 1000;
    const threshold = check ? check.healthyThreshold : 2;
    let passes = 0;
    for (;;) {
      const row = await this.deps.workloads.get(workloadId, null);
      const state = row.state as InstanceState;
      if (state === 'running') {
        const passed = check ? await this.deps.health.check({ workloadId, host, ports: portsOf(row) }, check) : true;
        passes = passed ? passes + 1 : 0;
      } else {
        passes = 0;
      }
      const verdict = healthVerdict({ state, consecutivePasses: passes, healthyThreshold: threshold, now: this.clock.now(), deadline });
      if (verdict === 'healthy') return undefined;
      if (verdict === 'unhealthy') {
        if (!['running', 'pending', 'provisioning', 'missing'].includes(state)) return `is ${state}${row.reason ? ` (${row.reason})` : ''}`;
        const what = check ? (check.type === 'exec' ? `exec ${check.command.join(' ')}` : check.type === 'http' ? `http ${check.port} ${check.path}` : `tcp ${check.port}`) : 'running';
        return `not healthy within ${component.update.healthDeadlineSeconds}s (${what})`;
      }
      const wait = state !== 'running' ? STARTING_POLL_MS : check ? check.intervalSeconds * 1000 : NO_CHECK_SETTLE_MS;
      await this.clock.sleep(Math.max(1, Math.min(wait, deadline - this.clock.now())));
    }
  }

  /** Stops and tears an instance down; a failure is recorded, not thrown (the reconciler finishes teardowns). */
  private async retire(context: RolloutContext, workloadId: string, text: string): Promise<void> {
    try {
      await this.deps.workloads.destroy(workloadId, null, { force: true, timeoutSeconds: this.deps.stopTimeoutSeconds });
      await this.event(context, text);
    } catch (err) {
      await this.event(context, `${text}: teardown failed (${isCorralError(err) ? err.message : 'internal error'}); left for the reconciler`);
    }
  }

  private async removeInstancesOf(context: RolloutContext, version: number, why: string): Promise<void> {
    for (const row of await this.deps.store.instances(context.service.id)) {
      if (row.serviceVersion === version) await this.retire(context, row.id, `${slot(row.componentName ?? '', row.instanceIndex ?? 0)}: ${row.id} removed (${why})`);
    }
  }
}
