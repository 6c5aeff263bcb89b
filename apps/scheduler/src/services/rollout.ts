import { diffComponent, type ComponentDefinition, type InstanceState, type ServiceDefinition } from '@corral/domain';

// The pure core of a rollout: from a target definition and the instances
// that exist now to the steps that get there, grouped into health-gated
// batches, and what to do when a batch fails. No I/O here.

/** A workload row of a service, as the rollout sees it. */
export interface ServiceInstanceRecord {
  workloadId: string;
  component: string;
  index: number;
  version: number;
  state: InstanceState;
  hostId: string | null;
  createdAt: Date;
}

export type RolloutStep =
  /** A slot with no instance gets one. */
  | { kind: 'create'; component: string; index: number }
  /** A new instance for the slot; `old` is stopped and torn down once the new one is healthy. */
  | { kind: 'replace'; component: string; index: number; old: string; why: string }
  /** An instance no version wants any more (scaled down, component gone, a duplicate). */
  | { kind: 'remove'; component: string; index: number; workloadId: string; why: string }
  /** Nothing about the instance changes but the version it belongs to (and its policies). */
  | { kind: 'adopt'; component: string; index: number; workloadId: string };

export type GatedStep = Extract<RolloutStep, { kind: 'create' | 'replace' }>;

export interface RolloutPlan {
  /** In-place changes, done first (nothing starts or stops). */
  adopt: Extract<RolloutStep, { kind: 'adopt' }>[];
  /** Creates and replacements, `max_parallel` of one component at a time; each batch must become healthy. */
  batches: GatedStep[][];
  /** Done last, once every batch became healthy. */
  remove: Extract<RolloutStep, { kind: 'remove' }>[];
}

/** States in which an instance is not running and will not by itself: a deploy replaces it. */
const AT_REST: ReadonlySet<InstanceState> = new Set<InstanceState>(['stopped', 'failed']);
/** States that no longer occupy a slot at all. */
const GONE: ReadonlySet<InstanceState> = new Set<InstanceState>(['retired', 'tearing_down']);

export interface RolloutInput {
  target: ServiceDefinition;
  targetVersion: number;
  instances: ServiceInstanceRecord[];
  /** The definition an instance was deployed with (by version); undefined if unknown. */
  definitionOf(version: number): ServiceDefinition | undefined;
  /** Whether the instance's host still satisfies the component's placement (for placement-only changes). */
  hostFits(instance: ServiceInstanceRecord, component: ComponentDefinition): boolean;
}

/** Why an instance of an older version must be replaced, or undefined when it can be adopted. */
export function replacementReason(input: RolloutInput, instance: ServiceInstanceRecord, component: ComponentDefinition): string | undefined {
  if (AT_REST.has(instance.state)) return `it is ${instance.state}`;
  if (instance.version === input.targetVersion) return undefined;
  const was = input.definitionOf(instance.version)?.components.find((c) => c.name === component.name);
  if (!was) return `its version ${instance.version} is unknown`;
  const changes = diffComponent(was, component);
  const forcing = changes.filter((ch) => ch.impact === 'replace').map((ch) => ch.field);
  if (forcing.length > 0) return `changed: ${forcing.join(', ')}`;
  if (changes.some((ch) => ch.impact === 'reschedule') && !input.hostFits(instance, component)) return 'its host no longer fits the placement';
  return undefined;
}

export function planRollout(input: RolloutInput): RolloutPlan {
  const adopt: RolloutPlan['adopt'] = [];
  const gated = new Map<string, GatedStep[]>();
  const remove: RolloutPlan['remove'] = [];
  const present = input.instances.filter((i) => !GONE.has(i.state));
  const wanted = new Map(input.target.components.map((c) => [c.name, c]));

  for (const component of input.target.components) {
    const steps: GatedStep[] = [];
    const mine = present.filter((i) => i.component === component.name);
    for (let index = 0; index < component.count; index++) {
      // Newest of the target version first, then newest overall: the one kept for the slot.
      const inSlot = mine
        .filter((i) => i.index === index)
        .sort((a, b) => Number(b.version === input.targetVersion) - Number(a.version === input.targetVersion) || b.createdAt.getTime() - a.createdAt.getTime());
      const [keep, ...extra] = inSlot;
      for (const dup of extra) remove.push({ kind: 'remove', component: component.name, index, workloadId: dup.workloadId, why: 'another instance holds its slot' });
      if (!keep) {
        steps.push({ kind: 'create', component: component.name, index });
        continue;
      }
      const why = replacementReason(input, keep, component);
      if (why) steps.push({ kind: 'replace', component: component.name, index, old: keep.workloadId, why });
      else if (keep.version !== input.targetVersion) adopt.push({ kind: 'adopt', component: component.name, index, workloadId: keep.workloadId });
    }
    for (const i of mine.filter((i) => i.index >= component.count)) {
      remove.push({ kind: 'remove', component: component.name, index: i.index, workloadId: i.workloadId, why: `scaled to ${component.count}` });
    }
    gated.set(component.name, steps);
  }
  for (const i of present.filter((i) => !wanted.has(i.component))) {
    remove.push({ kind: 'remove', component: i.component, index: i.index, workloadId: i.workloadId, why: 'the component is no longer in the definition' });
  }

  const batches: GatedStep[][] = [];
  for (const component of input.target.components) {
    const steps = gated.get(component.name) ?? [];
    const size = Math.max(1, component.update.maxParallel);
    for (let i = 0; i < steps.length; i += size) batches.push(steps.slice(i, i + size));
  }
  return { adopt, batches, remove };
}

export const stepCount = (plan: RolloutPlan) => plan.adopt.length + plan.batches.reduce((n, b) => n + b.length, 0) + plan.remove.length;

export type FailureDecision = { action: 'revert'; toVersion: number; reason: string } | { action: 'halt'; reason: string };

/**
 * What a failed batch leads to: back to the last good version when the
 * failing component's policy says so and there is one; otherwise the
 * rollout stops where it is (a revert that fails halts too, rather than
 * reverting the revert).
 */
export function decideOnFailure(input: { component: ComponentDefinition; previousVersion: number; reverting: boolean; failure: string }): FailureDecision {
  if (input.reverting) return { action: 'halt', reason: `the revert failed too: ${input.failure}` };
  if (input.previousVersion === 0) return { action: 'halt', reason: `${input.failure} (no earlier version to revert to)` };
  if (!input.component.update.autoRevert) return { action: 'halt', reason: `${input.failure} (auto_revert is off for ${input.component.name})` };
  return { action: 'revert', toVersion: input.previousVersion, reason: `${input.failure}; reverting to version ${input.previousVersion}` };
}

export type HealthVerdict = 'healthy' | 'waiting' | 'unhealthy';

/** States from which an instance may still become healthy by itself (missing: its host went silent, which is reversible). */
const MAY_BECOME_HEALTHY: ReadonlySet<InstanceState> = new Set<InstanceState>(['pending', 'provisioning', 'running', 'missing']);

/**
 * One instance's health so far: healthy after `healthyThreshold` passing
 * checks in a row; unhealthy once it stopped running or the deadline passed.
 */
export function healthVerdict(input: { state: InstanceState; consecutivePasses: number; healthyThreshold: number; now: number; deadline: number }): HealthVerdict {
  if (!MAY_BECOME_HEALTHY.has(input.state)) return 'unhealthy';
  if (input.state === 'running' && input.consecutivePasses >= input.healthyThreshold) return 'healthy';
  return input.now >= input.deadline ? 'unhealthy' : 'waiting';
}
