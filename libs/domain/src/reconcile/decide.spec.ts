import fc from 'fast-check';
import { INSTANCE_STATES, type InstanceState } from '../lifecycle/instance-state';
import { decide, DEFAULT_RECONCILE_POLICY, type DesiredWorkload, type ObservedHost, type ReconcilePolicy } from './decide';

const NOW = new Date('2026-12-03T12:00:00Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms);
const policy: ReconcilePolicy = { intentGraceMs: 60_000, provisioningTimeoutMs: 300_000, reportFreshnessMs: 10_000, maxActions: 50 };

function workload(overrides: Partial<DesiredWorkload> = {}): DesiredWorkload {
  return {
    workloadId: 'w1',
    hostId: 'h1',
    state: 'running',
    stateSince: ago(600_000),
    restart: { policy: 'on-failure', maxAttempts: 3, delaySeconds: 0 },
    restarts: 0,
    ...overrides,
  };
}

function host(runtimes: ObservedHost['runtimes'] = [], overrides: Partial<ObservedHost> = {}): ObservedHost {
  return { hostId: 'h1', status: 'online', reportedAt: ago(1_000), runtimes, ...overrides };
}

const oldRuntime = (workloadId: string, extra: Partial<ObservedHost['runtimes'][number]> = {}) => ({ workloadId, running: true, createdAt: ago(600_000), ...extra });

describe('decide (examples)', () => {
  it('reaps a labelled runtime that no record wants, once it is older than the grace window', () => {
    const plan = decide({ desired: [], observed: [host([oldRuntime('ghost')])], now: NOW, policy });
    expect(plan.actions).toEqual([expect.objectContaining({ kind: 'reap-orphan', workloadId: 'ghost', hostId: 'h1' })]);
    expect(plan.actions[0].reason).toContain('no record');
  });

  it('never reaps mid-create: a fresh runtime without a record, or a record still provisioning, is left alone', () => {
    const fresh = decide({ desired: [], observed: [host([oldRuntime('new', { createdAt: ago(1_000) })])], now: NOW, policy });
    expect(fresh.actions).toEqual([]);
    const provisioning = decide({ desired: [workload({ state: 'provisioning', stateSince: ago(5_000) })], observed: [host([])], now: NOW, policy });
    expect(provisioning.actions).toEqual([]);
  });

  it('fails provisioning that outlived its timeout, or adopts it when the host runs it', () => {
    const stuck = workload({ state: 'provisioning', stateSince: ago(301_000) });
    expect(decide({ desired: [stuck], observed: [host([])], now: NOW, policy }).actions).toEqual([expect.objectContaining({ kind: 'fail-stuck', workloadId: 'w1' })]);
    expect(decide({ desired: [stuck], observed: [host([oldRuntime('w1')])], now: NOW, policy }).actions).toEqual([
      expect.objectContaining({ kind: 'restore', state: 'running' }),
    ]);
  });

  it('marks a running workload missing when its fresh host report lacks it, but not on a stale report', () => {
    expect(decide({ desired: [workload()], observed: [host([])], now: NOW, policy }).actions).toEqual([expect.objectContaining({ kind: 'mark-missing' })]);
    expect(decide({ desired: [workload()], observed: [host([], { reportedAt: ago(60_000) })], now: NOW, policy }).actions).toEqual([]);
  });

  it('marks the live workloads of an unreachable host missing, never restarts or replaces them, and restores them when the host reports them alive', () => {
    const silent = host([], { status: 'unreachable', reportedAt: new Date(0) });
    expect(decide({ desired: [workload()], observed: [silent], now: NOW, policy }).actions).toEqual([
      expect.objectContaining({ kind: 'mark-missing', workloadId: 'w1', hostId: 'h1', reason: expect.stringContaining('unreachable') }),
    ]);
    expect(decide({ desired: [workload({ state: 'paused' })], observed: [silent], now: NOW, policy }).actions).toEqual([expect.objectContaining({ kind: 'mark-missing' })]);
    // Inside the grace window (it just started) it is left alone.
    expect(decide({ desired: [workload({ stateSince: ago(1_000) })], observed: [silent], now: NOW, policy }).actions).toEqual([]);
    // Once missing, an always-restart policy waits for the host: no restart, no replace while it is only unreachable.
    const missing = workload({ state: 'missing', restart: { policy: 'always', maxAttempts: 5, delaySeconds: 0 } });
    expect(decide({ desired: [missing], observed: [silent], now: NOW, policy }).actions).toEqual([]);
    // The host is back and reports it alive: restored.
    expect(decide({ desired: [missing], observed: [host([oldRuntime('w1')])], now: NOW, policy }).actions).toEqual([
      expect.objectContaining({ kind: 'restore', state: 'running', workloadId: 'w1' }),
    ]);
  });

  it('restores a missing workload its host reports alive, and restarts a vanished one per its policy', () => {
    const missing = workload({ state: 'missing' });
    expect(decide({ desired: [missing], observed: [host([oldRuntime('w1', { paused: true })])], now: NOW, policy }).actions).toEqual([
      expect.objectContaining({ kind: 'restore', state: 'paused' }),
    ]);
    expect(decide({ desired: [missing], observed: [host([])], now: NOW, policy }).actions).toEqual([expect.objectContaining({ kind: 'restart', attempt: 1 })]);
    expect(decide({ desired: [{ ...missing, restart: { policy: 'never', maxAttempts: 3, delaySeconds: 0 } }], observed: [host([])], now: NOW, policy }).actions).toEqual([]);
    expect(decide({ desired: [{ ...missing, restarts: 3 }], observed: [host([])], now: NOW, policy }).actions).toEqual([]);
    expect(decide({ desired: [{ ...missing, stateSince: ago(1_000), restart: { policy: 'always', maxAttempts: 3, delaySeconds: 30 } }], observed: [host([])], now: NOW, policy }).actions).toEqual([]);
  });

  it('restarts on-failure workloads that exited non-zero behind Corral\'s back, not clean exits', () => {
    expect(decide({ desired: [workload()], observed: [host([oldRuntime('w1', { running: false, exitCode: 2 })])], now: NOW, policy }).actions).toEqual([
      expect.objectContaining({ kind: 'restart' }),
    ]);
    expect(decide({ desired: [workload()], observed: [host([oldRuntime('w1', { running: false, exitCode: 0 })])], now: NOW, policy }).actions).toEqual([]);
  });

  it('restarts a workload recorded failed with an exit code per its policy, never a failed start', () => {
    const crashed = workload({ state: 'failed', exitCode: 137 });
    expect(decide({ desired: [crashed], observed: [host([oldRuntime('w1', { running: false, exitCode: 137 })])], now: NOW, policy }).actions).toEqual([
      expect.objectContaining({ kind: 'restart', attempt: 1 }),
    ]);
    expect(decide({ desired: [{ ...crashed, exitCode: undefined }], observed: [host([])], now: NOW, policy }).actions).toEqual([]);
    expect(decide({ desired: [{ ...crashed, restart: { policy: 'never', maxAttempts: 3, delaySeconds: 0 } }], observed: [host([])], now: NOW, policy }).actions).toEqual([]);
    expect(decide({ desired: [crashed], observed: [host([], { status: 'unreachable' })], now: NOW, policy }).actions).toEqual([]);
  });

  it('resumes interrupted teardown and stops what is recorded stopped but still runs', () => {
    expect(decide({ desired: [workload({ state: 'tearing_down' })], observed: [host([oldRuntime('w1')])], now: NOW, policy }).actions).toEqual([
      expect.objectContaining({ kind: 'resume-teardown' }),
    ]);
    expect(decide({ desired: [workload({ state: 'stopped' })], observed: [host([oldRuntime('w1')])], now: NOW, policy }).actions).toEqual([
      expect.objectContaining({ kind: 'resume-teardown' }),
    ]);
  });

  it('replaces workloads of a host that is down', () => {
    expect(decide({ desired: [workload()], observed: [host([], { status: 'down', reportedAt: ago(3_600_000) })], now: NOW, policy }).actions).toEqual([
      expect.objectContaining({ kind: 'replace', fromHostId: 'h1' }),
    ]);
  });

  it('rate-limits, keeping teardown before starts', () => {
    const desired = [workload({ workloadId: 'a', state: 'missing', restart: { policy: 'always', maxAttempts: 5, delaySeconds: 0 } }), workload({ workloadId: 'b', state: 'tearing_down' })];
    const plan = decide({ desired, observed: [host([])], now: NOW, policy: { ...policy, maxActions: 1 } });
    expect(plan.actions.map((a) => a.kind)).toEqual(['resume-teardown']);
    expect(plan.deferred).toBe(1);
  });
});

// Arbitrary fleets: a handful of ids so records and runtimes collide often.
const ids = fc.constantFrom('w1', 'w2', 'w3', 'w4', 'w5');
const hostIds = fc.constantFrom('h1', 'h2', 'h3');
const ageMs = fc.integer({ min: 0, max: 900_000 });
const desiredArb = fc.uniqueArray(
  fc.record({
    workloadId: ids,
    hostId: hostIds,
    state: fc.constantFrom<InstanceState>(...INSTANCE_STATES),
    stateSince: ageMs.map(ago),
    restart: fc.record({ policy: fc.constantFrom('always' as const, 'on-failure' as const, 'never' as const), maxAttempts: fc.integer({ min: 0, max: 5 }), delaySeconds: fc.integer({ min: 0, max: 120 }) }),
    restarts: fc.integer({ min: 0, max: 6 }),
    exitCode: fc.option(fc.integer({ min: 0, max: 137 }), { nil: undefined }),
  }),
  { selector: (w) => w.workloadId, maxLength: 5 },
);
const observedArb = fc.uniqueArray(
  fc.record({
    hostId: hostIds,
    status: fc.constantFrom('online' as const, 'unreachable' as const, 'draining' as const, 'down' as const),
    reportedAt: fc.integer({ min: 0, max: 30_000 }).map(ago),
    runtimes: fc.uniqueArray(
      fc.record({ workloadId: ids, running: fc.boolean(), paused: fc.boolean(), createdAt: ageMs.map(ago), exitCode: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }) }),
      { selector: (r) => r.workloadId, maxLength: 5 },
    ),
  }),
  { selector: (h) => h.hostId, maxLength: 3 },
);
const policyArb = fc.record({
  intentGraceMs: fc.integer({ min: 0, max: 120_000 }),
  provisioningTimeoutMs: fc.integer({ min: 0, max: 600_000 }),
  reportFreshnessMs: fc.integer({ min: 1_000, max: 20_000 }),
  maxActions: fc.integer({ min: 0, max: 10 }),
});

describe('decide (properties)', () => {
  it('never reaps or fails anything inside the grace window of an open intent', () => {
    fc.assert(
      fc.property(desiredArb, observedArb, policyArb, (desired, observed, p) => {
        const { actions } = decide({ desired, observed, now: NOW, policy: p });
        for (const action of actions) {
          const record = desired.find((w) => w.workloadId === action.workloadId);
          if (action.kind === 'reap-orphan') {
            const runtime = observed.find((h) => h.hostId === action.hostId)?.runtimes.find((r) => r.workloadId === action.workloadId);
            expect(runtime).toBeDefined();
            expect(NOW.getTime() - runtime!.createdAt.getTime()).toBeGreaterThanOrEqual(p.intentGraceMs);
            // A record that wants the runtime on this host, alive, is never reaped.
            if (record && record.hostId === action.hostId) expect(record.state).toBe('retired');
          }
          if (action.kind === 'fail-stuck') {
            expect(record).toBeDefined();
            expect(NOW.getTime() - record!.stateSince.getTime()).toBeGreaterThanOrEqual(Math.max(p.intentGraceMs, p.provisioningTimeoutMs));
          }
        }
      }),
    );
  });

  it('acts at most once per workload, within the action budget, and accounts for what it left', () => {
    fc.assert(
      fc.property(desiredArb, observedArb, policyArb, (desired, observed, p) => {
        const plan = decide({ desired, observed, now: NOW, policy: p });
        expect(plan.actions.length).toBeLessThanOrEqual(p.maxActions);
        const unbounded = decide({ desired, observed, now: NOW, policy: { ...p, maxActions: 1_000 } });
        expect(plan.actions.length + plan.deferred).toBe(unbounded.actions.length);
        const perRecord = unbounded.actions.filter((a) => a.kind !== 'reap-orphan').map((a) => a.workloadId);
        expect(new Set(perRecord).size).toBe(perRecord.length);
        for (const action of unbounded.actions) expect(action.reason.length).toBeGreaterThan(0);
      }),
    );
  });

  it('judges drift only on fresh reports from reachable hosts', () => {
    fc.assert(
      fc.property(desiredArb, observedArb, policyArb, (desired, observed, p) => {
        for (const action of decide({ desired, observed, now: NOW, policy: { ...p, maxActions: 1_000 } }).actions) {
          if (action.kind === 'mark-missing' || action.kind === 'reap-orphan' || action.kind === 'restart') {
            const reporting = observed.find((h) => h.hostId === action.hostId);
            expect(reporting).toBeDefined();
            // A silent host's live workloads are missing without any report.
            if (action.kind === 'mark-missing' && reporting!.status === 'unreachable') continue;
            expect(['online', 'draining']).toContain(reporting!.status);
            expect(NOW.getTime() - reporting!.reportedAt.getTime()).toBeLessThanOrEqual(p.reportFreshnessMs);
          }
        }
      }),
    );
  });

  it('restarts only within the policy\'s attempts, and never a workload whose policy is never', () => {
    fc.assert(
      fc.property(desiredArb, observedArb, (desired, observed) => {
        for (const action of decide({ desired, observed, now: NOW, policy: { ...DEFAULT_RECONCILE_POLICY, maxActions: 1_000 } }).actions) {
          if (action.kind !== 'restart') continue;
          const record = desired.find((w) => w.workloadId === action.workloadId)!;
          expect(record.restart.policy).not.toBe('never');
          expect(action.attempt).toBeLessThanOrEqual(record.restart.maxAttempts);
        }
      }),
    );
  });

  it('restarts a failed workload only when it exited with a code its policy restarts on, after the delay', () => {
    fc.assert(
      fc.property(desiredArb, observedArb, (desired, observed) => {
        for (const action of decide({ desired, observed, now: NOW, policy: { ...DEFAULT_RECONCILE_POLICY, maxActions: 1_000 } }).actions) {
          const record = desired.find((w) => w.workloadId === action.workloadId);
          if (action.kind !== 'restart' || record?.state !== 'failed') continue;
          expect(record.exitCode).toBeDefined();
          if (record.restart.policy === 'on-failure') expect(record.exitCode).not.toBe(0);
          expect(NOW.getTime() - record.stateSince.getTime()).toBeGreaterThanOrEqual(record.restart.delaySeconds * 1000);
        }
      }),
    );
  });

  it('marks every live workload of an unreachable host missing (past the grace window), and never restarts, replaces or reaps there', () => {
    fc.assert(
      fc.property(desiredArb, observedArb, policyArb, (desired, observed, p) => {
        const { actions } = decide({ desired, observed, now: NOW, policy: { ...p, maxActions: 1_000 } });
        const unreachable = new Set<string>(observed.filter((h) => h.status === 'unreachable').map((h) => h.hostId));
        for (const action of actions) {
          if (action.kind === 'replace') expect(observed.find((h) => h.hostId === action.fromHostId)?.status).toBe('down');
          if (action.kind === 'restart' || action.kind === 'reap-orphan' || action.kind === 'restore') expect(unreachable.has(action.hostId)).toBe(false);
        }
        for (const record of desired) {
          if (!unreachable.has(record.hostId) || (record.state !== 'running' && record.state !== 'paused')) continue;
          const due = NOW.getTime() - record.stateSince.getTime() >= p.intentGraceMs;
          expect(actions.filter((a) => a.workloadId === record.workloadId && a.kind !== 'reap-orphan')).toEqual(
            due ? [expect.objectContaining({ kind: 'mark-missing', hostId: record.hostId })] : [],
          );
        }
      }),
    );
  });

  it('is deterministic', () => {
    fc.assert(
      fc.property(desiredArb, observedArb, policyArb, (desired, observed, p) => {
        expect(decide({ desired, observed, now: NOW, policy: p })).toEqual(decide({ desired, observed, now: NOW, policy: p }));
      }),
    );
  });
});
