import { decide, type ReconcileAction, type ReconcilePolicy, type ReconcilePlan } from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { AuditRecorder } from './audit/audit-recorder';
import type { Executor, Outcome } from './execute/executor';
import type { ReconcilerLeadership } from './leadership/reconciler-leadership';
import type { Observation, Observer } from './observe/observer';

export type RoundResult =
  | { role: 'standby' }
  | { role: 'leader'; epoch: bigint; plan: ReconcilePlan; outcomes: Array<{ action: ReconcileAction; outcome: Outcome }> };

/** What each kind of action says was seen (the drift), for the audit trail. */
const DRIFT: Record<ReconcileAction['kind'], string> = {
  'reap-orphan': 'orphan',
  'fail-stuck': 'stuck',
  'resume-teardown': 'interrupted-teardown',
  'mark-missing': 'vanished',
  restore: 'back',
  restart: 'ended',
  replace: 'host-down',
};

/**
 * One round: lead or stand by; observe; decide (pure); for each action,
 * record the drift, act, record the action with its outcome. Entries and
 * record fixes are fenced by the epoch, so a leader deposed mid-round
 * writes nothing more, and it stops at the first refused entry.
 */
export class ReconcileLoop {
  private timer?: NodeJS.Timeout;
  private running?: Promise<unknown>;
  private stopped = false;

  constructor(
    private readonly deps: {
      leadership: ReconcilerLeadership;
      observer: Pick<Observer, 'observe'>;
      executor: Pick<Executor, 'execute'>;
      audit: Pick<AuditRecorder, 'record'>;
      policy: ReconcilePolicy;
      intervalMs: number;
      logger: Logger;
      now?: () => Date;
    },
  ) {}

  async round(): Promise<RoundResult> {
    const { leadership, observer, executor, audit, logger } = this.deps;
    const epoch = await leadership.check();
    if (epoch === undefined) return { role: 'standby' };
    const observation: Observation = await observer.observe();
    const plan = decide({ desired: observation.desired, observed: observation.observed, now: (this.deps.now ?? (() => new Date()))(), policy: this.deps.policy });
    if (plan.deferred > 0) logger.info('reconcile actions deferred to the next round', { deferred: plan.deferred, maxActions: this.deps.policy.maxActions });
    const outcomes: Array<{ action: ReconcileAction; outcome: Outcome }> = [];
    for (const action of plan.actions) {
      const subject = { subjectType: 'workload' as const, subjectId: action.workloadId, teamId: observation.teams.get(action.workloadId) ?? null };
      const hostId = action.kind === 'replace' ? action.fromHostId : action.hostId;
      const drift = await audit.record({ ...subject, kind: 'drift', action: DRIFT[action.kind], outcome: 'observed', reason: action.reason, data: { hostId } }, epoch);
      if (!drift) {
        leadership.stepDown('audit entry refused: fencing epoch moved on');
        break;
      }
      const outcome = await executor.execute(action, epoch, observation);
      outcomes.push({ action, outcome });
      const detail = outcome.outcome === 'succeeded' ? (outcome.detail ?? {}) : outcome.outcome === 'skipped' ? { why: outcome.why } : { error: outcome.error };
      await audit.record(
        { ...subject, kind: 'action', action: action.kind, outcome: outcome.outcome, reason: action.reason, data: { hostId, ...detail, ...('attempt' in action ? { attempt: action.attempt } : {}) } },
        epoch,
      );
      logger.info('reconcile action', { kind: action.kind, workloadId: action.workloadId, hostId, outcome: outcome.outcome, reason: action.reason });
    }
    return { role: 'leader', epoch, plan, outcomes };
  }

  start(): void {
    const tick = async () => {
      if (this.stopped) return;
      this.running = this.round().catch((err) => this.deps.logger.error('reconcile round failed', { err }));
      await this.running;
      if (!this.stopped) this.timer = setTimeout(tick, this.deps.intervalMs);
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
