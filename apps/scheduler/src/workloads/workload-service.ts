import { randomUUID } from 'node:crypto';
import {
  FailedPreconditionError,
  INSTANCE_STATES,
  TERMINAL_STATES,
  instanceStateFromProto,
  isCorralError,
  pauseResumeAction,
  validateWorkloadSpec,
  workloadExtrasToWire,
  type InstanceState,
  type WorkloadSpec,
  type WorkloadSpecInput,
} from '@corral/domain';
import type { Workload as WorkloadRow } from '@corral/db';
import type { Logger } from '@corral/logging';
import type { agentV1 } from '@corral/proto';
import type { AgentClient, AgentPool } from '../agents/agent-pool';
import type { DirectoryHost, HostDirectory } from '../hosts/host-directory';
import { noFitError, PlacementService, resourcesRequest, type Placer } from '../placement/placement-service';
import { postgresAllocationLedger, type PlacementTransaction } from '../placement/allocation-ledger';
import { portsOf, routesOf, specOfRow, type AgentReport, type NewWorkload, type ServiceMembership, type WorkloadListFilter, type WorkloadStore } from './workload-store';

export interface CreateWorkloadInput extends WorkloadSpecInput {
  teamId: string | null;
}

/** An agent's answer: its ports are the ones held at that seq. */
export function reportFromAgent(w: agentV1.AgentWorkload): AgentReport {
  return {
    seq: w.seq,
    state: instanceStateFromProto(w.state),
    exited: w.exited,
    exitCode: w.exitCode,
    reason: '',
    ports: w.ports.map((p) => ({ name: p.name, guestPort: p.guestPort, hostPort: p.hostPort, protocol: p.protocol })),
  };
}

/** Labels stamped on runtime objects so a host's leftovers can be traced back to Corral records. */
export function workloadLabels(id: string, teamId: string | null): Record<string, string> {
  return { 'corral.workload-id': id, ...(teamId ? { 'corral.team-id': teamId } : {}) };
}

/** What the agent is asked to run (start and restore alike): the spec under its record's id, with Corral's labels. */
function agentSpecOf(id: string, spec: WorkloadSpec, teamId: string | null): agentV1.WorkloadSpec {
  return {
    workloadId: id,
    name: spec.name,
    driver: spec.driver,
    command: spec.command,
    env: spec.env,
    labels: workloadLabels(id, teamId),
    ...workloadExtrasToWire(spec),
  };
}

/** Our own typed messages are safe to record; anything else is summarised. */
function startFailureReason(err: unknown): string {
  if (!isCorralError(err)) return 'agent call failed';
  if (err.code === 'UNAVAILABLE' || err.code === 'DEADLINE_EXCEEDED') return 'host agent unreachable';
  if (err.code === 'INTERNAL') return 'agent call failed';
  return `agent refused: ${err.message}`;
}

export interface PlaceAndStartOptions {
  /** Ties the row to a service component's instance slot. */
  membership?: ServiceMembership;
  /** Said before the placement's own reason in the workload's scheduled event. */
  why?: string;
  /** Written in the same transaction as the row (e.g. the link from the workload it replaces). */
  alsoRecord?: (tx: PlacementTransaction, id: string) => Promise<void>;
}

export interface DestroyOptions {
  /** Stop a live workload first instead of refusing. */
  force?: boolean;
  /** Grace period of that stop; 0 or absent: the default. */
  timeoutSeconds?: number;
}

/** Every state a workload can be retired from. */
const NOT_RETIRED: InstanceState[] = INSTANCE_STATES.filter((s) => s !== 'retired');
/** Workloads in these states may still run somewhere: destroying them needs force. */
const isLive = (state: InstanceState) => !TERMINAL_STATES.has(state) && state !== 'tearing_down';

export class WorkloadService {
  private readonly placement: Placer;

  constructor(
    private readonly store: WorkloadStore,
    private readonly hosts: HostDirectory,
    private readonly agents: AgentPool,
    private readonly logger: Logger,
    private readonly defaultStopTimeoutSeconds = 10,
    /** The one placement path; by default over this store's database with round-robin. */
    placement?: Placer,
  ) {
    this.placement = placement ?? new PlacementService({ hosts, ledger: postgresAllocationLedger(store.prisma), logger, defaultStrategy: 'round-robin' });
  }

  /**
   * Validates, places, records the intent, then asks the agent. The record is
   * written before the agent is called, so a crash in between leaves a
   * pending workload to reconcile rather than an untracked process.
   */
  async create(input: CreateWorkloadInput): Promise<WorkloadRow> {
    const spec = validateWorkloadSpec(input);
    return this.placeAndStart(spec, input.teamId);
  }

  /**
   * Places one workload through the PlacementService and writes its intent
   * row inside placement's locked transaction (the row is the reservation:
   * no replica can promise the same free memory meanwhile), then starts it.
   * Nothing fits: a FailedPrecondition whose message is the planner's reason.
   */
  async placeAndStart(spec: WorkloadSpec, teamId: string | null, options: PlaceAndStartOptions = {}): Promise<WorkloadRow> {
    const id = randomUUID();
    let host: DirectoryHost | undefined;
    let reason = '';
    const plan = await this.placement.place([{ driver: spec.driver, teamId, resources: resourcesRequest(spec.resources) }], {
      reservationKeys: [id],
      commit: async (tx, placed) => {
        const [placement] = placed.placements;
        // The plan's hosts are the directory's, with allocations added.
        host = placed.hosts.find((h) => h.id === placement.hostId) as DirectoryHost;
        reason = options.why ? `${options.why}; ${placement.reason}` : placement.reason;
        await this.store.create(this.newRow(id, spec, teamId, host.id, reason, options.membership), tx);
        await options.alsoRecord?.(tx, id);
      },
    });
    if (plan.unplaced.length > 0 || !host) throw noFitError(plan.unplaced[0]?.reason ?? 'no host can run it');
    this.logger.info('workload placed', { workloadId: id, hostId: host.id, reason });
    return this.startRecorded(id, spec, teamId, host);
  }

  /**
   * Records the intent of a validated, already placed workload, then asks its
   * host's agent to start it (the part of create after placement; service
   * deploys place their instances themselves and come in here). `membership`
   * ties the row to a service component's instance slot; `id` is the
   * reservation key the placement was booked under, if any.
   */
  async createOnHost(spec: WorkloadSpec, teamId: string | null, host: DirectoryHost, placementReason: string, membership?: ServiceMembership, id: string = randomUUID()): Promise<WorkloadRow> {
    await this.store.create(this.newRow(id, spec, teamId, host.id, placementReason, membership));
    this.logger.info('workload placed', { workloadId: id, hostId: host.id, reason: placementReason });
    return this.startRecorded(id, spec, teamId, host);
  }

  /**
   * Records the intent of a placed workload inside a placement's transaction
   * (PlacementService `commit`): the row is the reservation. Start it with
   * `startRecorded` once the transaction has committed.
   */
  async recordPlaced(tx: PlacementTransaction, id: string, spec: WorkloadSpec, teamId: string | null, hostId: string, placementReason: string, membership?: ServiceMembership): Promise<void> {
    await this.store.create(this.newRow(id, spec, teamId, hostId, placementReason, membership), tx);
  }

  /** Fails a recorded workload that was never handed to its agent (state pending). */
  async abandonRecorded(id: string, reason: string): Promise<void> {
    await this.store.transition(id, ['pending'], 'failed', reason, { reason });
  }

  private newRow(id: string, spec: WorkloadSpec, teamId: string | null, hostId: string, placementReason: string, membership?: ServiceMembership): NewWorkload {
    return {
      id,
      name: spec.name,
      teamId,
      driver: spec.driver,
      command: spec.command,
      env: spec.env,
      image: spec.image,
      resources: spec.resources,
      routes: spec.routes,
      vm: spec.vm,
      hostId,
      placementReason,
      ...(membership ? { service: membership } : {}),
    };
  }

  /** Starts a workload whose pending row is written: provisioning, then the agent's answer (or failed). */
  /** Asks the host's agent to start a workload whose intent row is written (state pending). */
  async startRecorded(id: string, spec: WorkloadSpec, teamId: string | null, host: DirectoryHost): Promise<WorkloadRow> {
    await this.store.transition(id, ['pending'], 'provisioning', `starting on ${host.name}`);
    try {
      const res = await this.agents.get(host).startWorkload({ spec: agentSpecOf(id, spec, teamId) });
      if (res.workload) await this.store.applyAgentReport(id, reportFromAgent(res.workload), 'start-response');
    } catch (err) {
      const reason = startFailureReason(err);
      this.logger.warn('starting workload on agent failed', { workloadId: id, hostId: host.id, err });
      // If the agent did start it after all, its next report (higher seq) wins.
      await this.store.transition(id, ['pending', 'provisioning'], 'failed', reason, { reason });
    }
    return this.store.get(id, null);
  }

  /**
   * A new workload started from a snapshot of `sourceId` on the snapshot's
   * host (the only place the snapshot exists): the source's spec under a new
   * id, placed through the PlacementService pinned to that host (its intent
   * row written under the host's lock, so a restore cannot over-commit it),
   * then the agent is asked, like create. A full host: FailedPrecondition.
   */
  async restore(sourceId: string, teamId: string | null, snapshotId: string, name?: string): Promise<WorkloadRow> {
    const source = await this.store.get(sourceId, teamId);
    if (!source.hostId) throw new FailedPreconditionError(`workload ${sourceId} has no host, so no snapshot`);
    const spec = specOfRow({ ...source, name: name || `${source.name}-restored`.slice(0, 63).replace(/-+$/, '') });
    const host = await this.hosts.get(source.hostId);
    const id = randomUUID();
    const why = `restored from snapshot ${snapshotId} of ${sourceId}, which lives on ${host.name}`;
    const plan = await this.placement.place([{ driver: spec.driver, teamId: source.teamId, resources: resourcesRequest(spec.resources), hostPin: host.id }], {
      reservationKeys: [id],
      commit: async (tx) => {
        await this.store.create(this.newRow(id, spec, source.teamId, host.id, why), tx);
      },
    });
    if (plan.unplaced.length > 0) throw noFitError(`the snapshot lives on ${host.name}: ${plan.unplaced[0].reason}`);
    await this.store.transition(id, ['pending'], 'provisioning', `restoring on ${host.name}`);
    try {
      const res = await this.agents.get(host).restoreWorkload({
        spec: agentSpecOf(id, spec, source.teamId),
        sourceWorkloadId: sourceId,
        snapshotId,
        paused: false,
      });
      if (res.workload) await this.store.applyAgentReport(id, reportFromAgent(res.workload), 'restore-response');
    } catch (err) {
      const reason = startFailureReason(err);
      this.logger.warn('restoring workload on agent failed', { workloadId: id, sourceId, snapshotId, err });
      await this.store.transition(id, ['pending', 'provisioning'], 'failed', reason, { reason });
      // A refusal the caller can act on (no such snapshot, driver cannot restore) is theirs to see.
      if (isCorralError(err) && (err.code === 'NOT_FOUND' || err.code === 'FAILED_PRECONDITION' || err.code === 'INVALID_ARGUMENT')) throw err;
    }
    this.logger.info('workload restored from a snapshot', { workloadId: id, sourceId, snapshotId });
    return this.store.get(id, null);
  }

  get(id: string, teamId: string | null) {
    return this.store.get(id, teamId);
  }

  list(teamId: string | null, filter: WorkloadListFilter = {}) {
    return this.store.list(teamId, filter);
  }

  /** Idempotent: a workload already stopped (or failed) is returned unchanged. */
  async stop(id: string, teamId: string | null, timeoutSeconds?: number): Promise<WorkloadRow> {
    const workload = await this.store.get(id, teamId);
    if (TERMINAL_STATES.has(workload.state as InstanceState) || workload.state === 'tearing_down') return workload;
    if (!workload.hostId) {
      await this.store.transition(id, [workload.state as InstanceState], 'stopped', 'stopped before it was placed');
      return this.store.get(id, null);
    }
    await this.store.transition(id, ['pending', 'provisioning', 'running', 'paused', 'missing'], 'stopping', 'stop requested');
    const host = await this.hosts.get(workload.hostId);
    const timeout = timeoutSeconds || this.defaultStopTimeoutSeconds;
    try {
      const res = await this.agents.get(host).stopWorkload(
        { workloadId: id, timeoutSeconds: timeout, signal: 'SIGTERM' },
        // The agent waits up to the grace period before killing; leave room for that.
        { deadlineMs: (timeout + 10) * 1000 },
      );
      if (res.workload) await this.store.applyAgentReport(id, reportFromAgent(res.workload), 'stop-response');
    } catch (err) {
      if (isCorralError(err) && err.code === 'NOT_FOUND') {
        // The agent has no such workload: nothing is left to stop there.
        await this.store.transition(id, ['stopping'], 'stopped', 'unknown to its host', { reason: 'unknown to its host' });
      } else {
        throw err;
      }
    }
    return this.store.get(id, null);
  }

  /**
   * Tears a workload down on its host and retires it: `tearing_down` is
   * written first (the intent), then the agent's DestroyWorkload (which
   * removes the container or VM, volume, ports and logs), then `retired`.
   * Idempotent: a retired workload is returned unchanged, one left
   * tearing_down is finished. A live workload is a FailedPrecondition unless
   * `force` (the agent stops it first). When the host is gone (deleted or
   * down) nothing can be torn down there: the record is retired with that
   * reason rather than left waiting. An unreachable host leaves it
   * tearing_down and the call fails; calling again finishes it.
   */
  async destroy(id: string, teamId: string | null, options: DestroyOptions = {}): Promise<WorkloadRow> {
    const workload = await this.store.get(id, teamId);
    const state = workload.state as InstanceState;
    if (state === 'retired') return workload;
    if (isLive(state) && !options.force) {
      throw new FailedPreconditionError(`cannot destroy workload ${id}: it is ${state} (stop it first, or force)`);
    }
    if (!workload.hostId) {
      await this.store.transition(id, NOT_RETIRED, 'retired', 'retired before it was placed', { reason: 'retired before it was placed' });
      return this.store.get(id, null);
    }
    const host = await this.hostOrGone(workload.hostId);
    if (typeof host === 'string') {
      const reason = `retired without teardown: its host is ${host}`;
      await this.store.transition(id, NOT_RETIRED, 'retired', reason, { reason });
      this.logger.warn('workload retired without teardown', { workloadId: id, hostId: workload.hostId, why: host });
      return this.store.get(id, null);
    }
    if (state !== 'tearing_down') await this.store.transition(id, [state], 'tearing_down', 'teardown requested');
    const timeout = options.timeoutSeconds || this.defaultStopTimeoutSeconds;
    try {
      const res = await this.agents.get(host).destroyWorkload(
        { workloadId: id, force: options.force ?? false, timeoutSeconds: timeout },
        // A forced destroy stops first (grace period, then kill); the runtime then removes what is left.
        { deadlineMs: (timeout + 30) * 1000 },
      );
      if (res.workload) await this.store.applyAgentReport(id, reportFromAgent(res.workload), 'destroy-response');
    } catch (err) {
      if (isCorralError(err) && err.code === 'FAILED_PRECONDITION' && state !== 'tearing_down') {
        // The host refused (it still runs there): the intent is withdrawn; its reports tell the state.
        await this.store.transition(id, ['tearing_down'], state, 'teardown refused by its host');
      }
      throw err;
    }
    // The host has nothing of it left, whether it answered with the retired record or did not know it.
    await this.store.transition(id, NOT_RETIRED, 'retired', `torn down on ${host.name}`);
    this.logger.info('workload destroyed', { workloadId: id, hostId: host.id });
    return this.store.get(id, null);
  }

  /** The workload's host, or why there is none to ask any more (deleted, down). */
  private async hostOrGone(hostId: string): Promise<DirectoryHost | 'deleted' | 'down'> {
    try {
      const host = await this.hosts.get(hostId);
      return host.status === 'down' ? 'down' : host;
    } catch (err) {
      if (isCorralError(err) && err.code === 'NOT_FOUND') return 'deleted';
      throw err;
    }
  }

  /**
   * Freezes a running workload on its host. Idempotent: a paused workload is
   * returned unchanged; any state but running or paused, or a driver that
   * cannot pause, is a FailedPrecondition.
   */
  pause(id: string, teamId: string | null): Promise<WorkloadRow> {
    return this.pauseOrResume(id, teamId, 'paused');
  }

  /** Thaws a paused workload. Idempotent like pause. */
  resume(id: string, teamId: string | null): Promise<WorkloadRow> {
    return this.pauseOrResume(id, teamId, 'running');
  }

  /**
   * Applies a state change an agent published. Events carry the ports the
   * agent holds (`ports_reported`); those of agents older than that do not:
   * when one brings a workload with routes to life whose ports are not known
   * here, they are asked of the agent.
   */
  async applyEvent(id: string, report: AgentReport): Promise<boolean> {
    const applied = await this.store.applyAgentReport(id, report, 'event');
    if (applied && (report.state === 'running' || report.state === 'paused')) {
      const row = await this.store.get(id, null);
      if (routesOf(row).length > 0 && portsOf(row).length === 0 && row.hostId) {
        try {
          const host = await this.hosts.get(row.hostId);
          const res = await this.agents.get(host).inspectWorkload({ workloadId: id });
          if (res.workload) await this.store.applyAgentReport(id, reportFromAgent(res.workload), 'inspect');
        } catch (err) {
          this.logger.warn('could not read the ports of a workload from its agent', { workloadId: id, err });
        }
      }
    }
    return applied;
  }

  private async pauseOrResume(id: string, teamId: string | null, to: 'paused' | 'running'): Promise<WorkloadRow> {
    const workload = await this.store.get(id, teamId);
    const state = workload.state as InstanceState;
    const action = pauseResumeAction(state, to);
    if (action === 'already') return workload;
    const verb = to === 'paused' ? 'pause' : 'resume';
    if (action === 'refuse' || !workload.hostId) {
      throw new FailedPreconditionError(`cannot ${verb} workload ${id}: it is ${state}`);
    }
    const host = await this.hosts.get(workload.hostId);
    const agent = this.agents.get(host);
    try {
      const res = to === 'paused' ? await agent.pauseWorkload({ workloadId: id }) : await agent.resumeWorkload({ workloadId: id });
      if (res.workload) await this.store.applyAgentReport(id, reportFromAgent(res.workload), `${verb}-response`);
    } catch (err) {
      // The workload is ours but its host has no such thing: that is its state, not a missing resource.
      if (isCorralError(err) && err.code === 'NOT_FOUND') throw new FailedPreconditionError(`cannot ${verb} workload ${id}: unknown to its host`, { cause: err });
      throw err;
    }
    this.logger.info(to === 'paused' ? 'workload paused' : 'workload resumed', { workloadId: id });
    return this.store.get(id, null);
  }

  /**
   * The workload's output from its agent's StreamLogs (team-scoped like
   * logs): the tail, then with `follow` new output until the workload ends.
   * Aborting `signal` (the caller went away) cancels the agent's stream.
   */
  async *streamLogs(
    id: string,
    teamId: string | null,
    options: { tailBytes: number; follow: boolean; signal?: AbortSignal },
  ): AsyncGenerator<Buffer, void, undefined> {
    let workload = await this.store.get(id, teamId);
    // Followed while still being placed: wait for its host (or its end).
    while (options.follow && !workload.hostId && !TERMINAL_STATES.has(workload.state as InstanceState) && !options.signal?.aborted) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      workload = await this.store.get(id, teamId);
    }
    if (!workload.hostId || options.signal?.aborted) return;
    const host = await this.hosts.get(workload.hostId);
    const chunks = this.agents
      .get(host)
      .stream('streamLogs', { workloadId: id, tailBytes: options.tailBytes, follow: options.follow }, { signal: options.signal });
    for await (const chunk of chunks) yield Buffer.from(chunk.data);
  }

  /**
   * The agent of the workload's host, for exec, files and snapshots
   * (team-scoped: another team's workload is NotFound). A workload without a
   * host yet, or already finished, is a FailedPrecondition.
   */
  async agentOf(id: string, teamId: string | null, what: string): Promise<AgentClient> {
    const workload = await this.store.get(id, teamId);
    const state = workload.state as InstanceState;
    if (!workload.hostId || TERMINAL_STATES.has(state)) throw new FailedPreconditionError(`cannot ${what} workload ${id}: it is ${state}`);
    const host = await this.hosts.get(workload.hostId);
    return this.agents.get(host);
  }

  /**
   * The agent of the host holding the workload's snapshots (team-scoped like
   * agentOf), whatever state the workload is in: a stopped workload's
   * snapshots stay on its host until teardown. Undefined when it never had
   * a host, or is retired (teardown removed them).
   */
  async snapshotHostOf(id: string, teamId: string | null): Promise<AgentClient | undefined> {
    const workload = await this.store.get(id, teamId);
    if (!workload.hostId || workload.state === 'retired') return undefined;
    const host = await this.hosts.get(workload.hostId);
    return this.agents.get(host);
  }

  async logs(id: string, teamId: string | null, tailBytes: number): Promise<{ data: Buffer; truncated: boolean }> {
    const workload = await this.store.get(id, teamId);
    if (!workload.hostId) return { data: Buffer.alloc(0), truncated: false };
    const host = await this.hosts.get(workload.hostId);
    const res = await this.agents.get(host).readLogs({ workloadId: id, tailBytes });
    return { data: Buffer.from(res.data), truncated: res.truncated };
  }
}
