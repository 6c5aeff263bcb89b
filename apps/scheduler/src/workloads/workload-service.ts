import { randomUUID } from 'node:crypto';
import {
  FailedPreconditionError,
  TERMINAL_STATES,
  instanceStateFromProto,
  isCorralError,
  pauseResumeAction,
  placeRoundRobin,
  validateWorkloadSpec,
  workloadExtrasToWire,
  type InstanceState,
  type WorkloadSpecInput,
} from '@corral/domain';
import type { Workload as WorkloadRow } from '@corral/db';
import type { Logger } from '@corral/logging';
import type { agentV1 } from '@corral/proto';
import type { AgentClient, AgentPool } from '../agents/agent-pool';
import type { HostDirectory } from '../hosts/host-directory';
import { portsOf, routesOf, type AgentReport, type WorkloadStore } from './workload-store';

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

/** Our own typed messages are safe to record; anything else is summarised. */
function startFailureReason(err: unknown): string {
  if (!isCorralError(err)) return 'agent call failed';
  if (err.code === 'UNAVAILABLE' || err.code === 'DEADLINE_EXCEEDED') return 'host agent unreachable';
  if (err.code === 'INTERNAL') return 'agent call failed';
  return `agent refused: ${err.message}`;
}

export class WorkloadService {
  private cursor = 0;

  constructor(
    private readonly store: WorkloadStore,
    private readonly hosts: HostDirectory,
    private readonly agents: AgentPool,
    private readonly logger: Logger,
    private readonly defaultStopTimeoutSeconds = 10,
  ) {}

  /**
   * Validates, places, records the intent, then asks the agent. The record is
   * written before the agent is called, so a crash in between leaves a
   * pending workload to reconcile rather than an untracked process.
   */
  async create(input: CreateWorkloadInput): Promise<WorkloadRow> {
    const spec = validateWorkloadSpec(input);
    const hosts = await this.hosts.list(input.teamId);
    const decision = placeRoundRobin(hosts, { driver: spec.driver, teamId: input.teamId }, this.cursor);
    this.cursor = decision.nextCursor;
    if (!decision.placed) throw new FailedPreconditionError(decision.reason);
    const host = hosts.find((h) => h.id === decision.hostId)!;

    const id = randomUUID();
    await this.store.create({
      id,
      name: spec.name,
      teamId: input.teamId,
      driver: spec.driver,
      command: spec.command,
      env: spec.env,
      image: spec.image,
      resources: spec.resources,
      routes: spec.routes,
      vm: spec.vm,
      hostId: host.id,
      placementReason: decision.reason,
    });
    this.logger.info('workload placed', { workloadId: id, hostId: host.id, reason: decision.reason });
    await this.store.transition(id, ['pending'], 'provisioning', `starting on ${host.name}`);
    try {
      const res = await this.agents.get(host.agentAddress).startWorkload({
        spec: {
          workloadId: id,
          name: spec.name,
          driver: spec.driver,
          command: spec.command,
          env: spec.env,
          labels: workloadLabels(id, input.teamId),
          ...workloadExtrasToWire(spec),
        },
      });
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
   * id, recorded as intent before the agent is asked, like create.
   */
  async restore(sourceId: string, teamId: string | null, snapshotId: string, name?: string): Promise<WorkloadRow> {
    const source = await this.store.get(sourceId, teamId);
    if (!source.hostId) throw new FailedPreconditionError(`workload ${sourceId} has no host, so no snapshot`);
    const spec = validateWorkloadSpec({
      name: name || `${source.name}-restored`.slice(0, 63).replace(/-+$/, ''),
      driver: source.driver,
      command: (source.command ?? []) as string[],
      env: (source.env ?? {}) as Record<string, string>,
      image: source.image ?? undefined,
      resources: Object.keys((source.resources ?? {}) as object).length > 0 ? (source.resources as WorkloadSpecInput['resources']) : undefined,
      routes: routesOf(source),
      vm: (source.vm ?? undefined) as WorkloadSpecInput['vm'],
    });
    const host = await this.hosts.get(source.hostId);
    const id = randomUUID();
    await this.store.create({
      id,
      name: spec.name,
      teamId: source.teamId,
      driver: spec.driver,
      command: spec.command,
      env: spec.env,
      image: spec.image,
      resources: spec.resources,
      routes: spec.routes,
      vm: spec.vm,
      hostId: host.id,
      placementReason: `restored from snapshot ${snapshotId} of ${sourceId}, which lives on ${host.name}`,
    });
    await this.store.transition(id, ['pending'], 'provisioning', `restoring on ${host.name}`);
    try {
      const res = await this.agents.get(host.agentAddress).restoreWorkload({
        spec: {
          workloadId: id,
          name: spec.name,
          driver: spec.driver,
          command: spec.command,
          env: spec.env,
          labels: workloadLabels(id, source.teamId),
          ...workloadExtrasToWire(spec),
        },
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

  list(teamId: string | null) {
    return this.store.list(teamId);
  }

  /** Idempotent: a workload already stopped (or failed) is returned unchanged. */
  async stop(id: string, teamId: string | null, timeoutSeconds?: number): Promise<WorkloadRow> {
    const workload = await this.store.get(id, teamId);
    if (TERMINAL_STATES.has(workload.state as InstanceState)) return workload;
    if (!workload.hostId) {
      await this.store.transition(id, [workload.state as InstanceState], 'stopped', 'stopped before it was placed');
      return this.store.get(id, null);
    }
    await this.store.transition(id, ['pending', 'provisioning', 'running', 'paused', 'missing'], 'stopping', 'stop requested');
    const host = await this.hosts.get(workload.hostId);
    const timeout = timeoutSeconds || this.defaultStopTimeoutSeconds;
    try {
      const res = await this.agents.get(host.agentAddress).stopWorkload(
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
   * Applies a state change an agent published. Events carry no ports: when
   * one brings a workload with routes to life whose ports are not known here
   * (its start answer was lost), they are asked of the agent.
   */
  async applyEvent(id: string, report: AgentReport): Promise<boolean> {
    const applied = await this.store.applyAgentReport(id, report, 'event');
    if (applied && (report.state === 'running' || report.state === 'paused')) {
      const row = await this.store.get(id, null);
      if (routesOf(row).length > 0 && portsOf(row).length === 0 && row.hostId) {
        try {
          const host = await this.hosts.get(row.hostId);
          const res = await this.agents.get(host.agentAddress).inspectWorkload({ workloadId: id });
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
    const agent = this.agents.get(host.agentAddress);
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
      .get(host.agentAddress)
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
    return this.agents.get(host.agentAddress);
  }

  async logs(id: string, teamId: string | null, tailBytes: number): Promise<{ data: Buffer; truncated: boolean }> {
    const workload = await this.store.get(id, teamId);
    if (!workload.hostId) return { data: Buffer.alloc(0), truncated: false };
    const host = await this.hosts.get(workload.hostId);
    const res = await this.agents.get(host.agentAddress).readLogs({ workloadId: id, tailBytes });
    return { data: Buffer.from(res.data), truncated: res.truncated };
  }
}
