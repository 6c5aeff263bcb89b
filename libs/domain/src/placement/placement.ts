import { InvalidArgumentError } from '../errors/errors';
import type { HostStatus } from '../lifecycle/instance-state';

// Placement is pure: the hosts come in, a decision comes out, nothing is read
// or written here. Feasibility first (which hosts could run it at all), then
// the strategy scores the feasible ones, then the plan reserves what it
// placed so the next request (and the next plan) sees the host fuller.

export interface HostResources {
  /** 1000 per vCPU. */
  cpuMillis: number;
  memoryMb: number;
}

export interface PlacementHost {
  id: string;
  name: string;
  status: HostStatus;
  /** Null for platform hosts; set for a team's own (BYOC) hosts. */
  teamId: string | null;
  drivers: { name: string; healthy: boolean }[];
  /** What the host offers to workloads. Unknown: requests with resources cannot go there. */
  capacity?: HostResources;
  /** Already committed: running instances plus in-flight reservations. */
  allocated?: HostResources;
  labels?: Record<string, string>;
}

export interface PlacementRequest {
  driver: string;
  /** Null for workloads of the platform itself (admin keys). */
  teamId: string | null;
  /** What one instance needs. Absent: no resource check and nothing reserved. */
  resources?: { vcpus: number; memoryMb: number };
  /** Host labels that must all match exactly. */
  labels?: Record<string, string>;
  /** Only this host, by id or name. */
  hostPin?: string;
  /** Only this team's own (BYOC) hosts, not the platform's. */
  hostTeamId?: string;
  /** For `spread`: the host label whose values instances are spread across (else: across hosts). */
  spreadBy?: string;
  /** For `spread`: which instances count as siblings (e.g. `service/component`). Default: one group. */
  group?: string;
}

export type Infeasibility =
  | 'not-pinned'
  | 'not-online'
  | 'other-team'
  | 'not-team-host'
  | 'driver-missing'
  | 'driver-unhealthy'
  | 'label-mismatch'
  | 'capacity-unknown'
  | 'insufficient-memory'
  | 'insufficient-cpu';

export const cpuMillisOf = (vcpus: number) => Math.round(vcpus * 1000);

export function freeResources(host: PlacementHost): HostResources | undefined {
  if (!host.capacity) return undefined;
  return {
    cpuMillis: host.capacity.cpuMillis - (host.allocated?.cpuMillis ?? 0),
    memoryMb: host.capacity.memoryMb - (host.allocated?.memoryMb ?? 0),
  };
}

const pinMatches = (host: PlacementHost, pin: string) => host.id === pin || host.name === pin;

function labelMismatch(host: PlacementHost, wanted: Record<string, string> | undefined): string | undefined {
  for (const [key, value] of Object.entries(wanted ?? {})) {
    const have = host.labels?.[key];
    if (have !== value) return have === undefined ? `no ${key}` : `${key}=${have}`;
  }
  return undefined;
}

/** Why `host` cannot take `request`, or undefined when it can. Checks run in this order. */
export function infeasibility(host: PlacementHost, request: PlacementRequest): Infeasibility | undefined {
  return staticInfeasibility(host, request) ?? resourceInfeasibility(host, request);
}

/** The checks a plan's own reservations cannot change. */
function staticInfeasibility(host: PlacementHost, request: PlacementRequest): Infeasibility | undefined {
  if (request.hostPin !== undefined && !pinMatches(host, request.hostPin)) return 'not-pinned';
  if (host.status !== 'online') return 'not-online';
  // A team's own hosts run only that team's workloads; platform hosts run anyone's.
  if (host.teamId !== null && host.teamId !== request.teamId) return 'other-team';
  if (request.hostTeamId !== undefined && host.teamId !== request.hostTeamId) return 'not-team-host';
  const driver = host.drivers.find((d) => d.name === request.driver);
  if (!driver) return 'driver-missing';
  if (!driver.healthy) return 'driver-unhealthy';
  if (labelMismatch(host, request.labels) !== undefined) return 'label-mismatch';
  return undefined;
}

function resourceInfeasibility(host: PlacementHost, request: PlacementRequest): Infeasibility | undefined {
  if (!request.resources) return undefined;
  if (!host.capacity) return 'capacity-unknown';
  if (host.capacity.memoryMb - (host.allocated?.memoryMb ?? 0) < request.resources.memoryMb) return 'insufficient-memory';
  if (host.capacity.cpuMillis - (host.allocated?.cpuMillis ?? 0) < cpuMillisOf(request.resources.vcpus)) return 'insufficient-cpu';
  return undefined;
}

export type PlacementDecision =
  | { placed: true; hostId: string; reason: string; nextCursor: number }
  | { placed: false; reason: string; nextCursor: number };

const describe: Record<Infeasibility, string> = {
  'not-pinned': 'not the pinned host',
  'not-online': 'not online',
  'other-team': "another team's",
  'not-team-host': "not the team's own",
  'driver-missing': 'without the driver',
  'driver-unhealthy': 'with the driver unhealthy',
  'label-mismatch': 'with other labels',
  'capacity-unknown': 'with unknown capacity',
  'insufficient-memory': 'without enough memory',
  'insufficient-cpu': 'without enough CPU',
};

const BASIC: ReadonlySet<Infeasibility> = new Set(['not-pinned', 'not-online', 'other-team', 'not-team-host', 'driver-missing', 'driver-unhealthy']);

const mb = (n: number) => `${n} MB`;
const vcpuText = (millis: number) => {
  const v = Math.round(millis / 10) / 100;
  return `${v} vCPU${v === 1 ? '' : 's'}`;
};
const labelsText = (labels: Record<string, string>) =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
const hostLabel = (h: PlacementHost) => h.name || h.id;

function pinnedReason(host: PlacementHost, request: PlacementRequest, why: Infeasibility): string {
  const need = request.resources ?? { vcpus: 0, memoryMb: 0 };
  const free = freeResources(host) ?? { cpuMillis: 0, memoryMb: 0 };
  switch (why) {
    case 'not-online':
      return `pinned host ${hostLabel(host)} is ${host.status}`;
    case 'other-team':
      return `pinned host ${hostLabel(host)} belongs to another team`;
    case 'not-team-host':
      return `pinned host ${hostLabel(host)} is not one of team ${request.hostTeamId}'s own hosts`;
    case 'driver-missing':
      return `pinned host ${hostLabel(host)} has no "${request.driver}" driver`;
    case 'driver-unhealthy':
      return `pinned host ${hostLabel(host)} reports its "${request.driver}" driver unhealthy`;
    case 'label-mismatch':
      return `pinned host ${hostLabel(host)} does not match labels ${labelsText(request.labels ?? {})} (it has ${labelMismatch(host, request.labels)})`;
    case 'capacity-unknown':
      return `pinned host ${hostLabel(host)} reports no capacity`;
    case 'insufficient-memory':
      return `pinned host ${hostLabel(host)} has ${free.memoryMb} MB free; ${mb(need.memoryMb)} needed`;
    case 'insufficient-cpu':
      return `pinned host ${hostLabel(host)} has ${vcpuText(free.cpuMillis)} free; ${vcpuText(cpuMillisOf(need.vcpus))} needed`;
    default:
      return `pinned host ${hostLabel(host)} cannot run it`;
  }
}

/** Why nothing fits, in words an operator can act on. */
export function explainNoFit(hosts: PlacementHost[], request: PlacementRequest): string {
  if (hosts.length === 0) return 'no hosts are registered';
  const pin = request.hostPin;
  if (pin !== undefined) {
    const pinned = hosts.find((h) => pinMatches(h, pin));
    if (!pinned) return `pinned host "${pin}" is not registered`;
    const why = infeasibility(pinned, request);
    if (why) return pinnedReason(pinned, request, why);
  }
  const reasons = hosts.map((host) => ({ host, why: infeasibility(host, request) }));
  const counts = new Map<Infeasibility, number>();
  for (const { why } of reasons) if (why) counts.set(why, (counts.get(why) ?? 0) + 1);

  const past = reasons.filter((r) => r.why !== undefined && !BASIC.has(r.why));
  if (past.length === 0) {
    const parts = [...counts].map(([why, n]) => `${n} ${describe[why]}`);
    return `no online host can run driver "${request.driver}" (${hosts.length} hosts: ${parts.join(', ')})`;
  }

  const pastLabels = past.filter((r) => r.why !== 'label-mismatch').map((r) => r.host);
  if (pastLabels.length === 0) {
    const examples = past.slice(0, 3).map((r) => `${hostLabel(r.host)} has ${labelMismatch(r.host, request.labels)}`);
    const more = past.length > 3 ? `, and ${past.length - 3} more` : '';
    return `no host matches labels ${labelsText(request.labels ?? {})} (${past.length} can run driver "${request.driver}": ${examples.join(', ')}${more})`;
  }

  // Everything left failed on resources (so the request has some).
  const need = request.resources ?? { vcpus: 0, memoryMb: 0 };
  const needCpu = cpuMillisOf(need.vcpus);
  const sized = pastLabels.map((host) => ({ host, free: freeResources(host) })).filter((c): c is { host: PlacementHost; free: HostResources } => !!c.free);
  if (sized.length === 0) return `no host reports its capacity (${pastLabels.length} otherwise suitable)`;
  const byMemory = [...sized].sort((a, b) => b.free.memoryMb - a.free.memoryMb || (a.host.id < b.host.id ? -1 : 1));
  const byCpu = [...sized].sort((a, b) => b.free.cpuMillis - a.free.cpuMillis || (a.host.id < b.host.id ? -1 : 1));
  const enoughMemory = sized.some((c) => c.free.memoryMb >= need.memoryMb);
  const enoughCpu = sized.some((c) => c.free.cpuMillis >= needCpu);
  if (!enoughMemory) return `no host has ${mb(need.memoryMb)} free; best candidate ${hostLabel(byMemory[0].host)} has ${Math.max(0, byMemory[0].free.memoryMb)}`;
  if (!enoughCpu) return `no host has ${vcpuText(needCpu)} free; best candidate ${hostLabel(byCpu[0].host)} has ${vcpuText(Math.max(0, byCpu[0].free.cpuMillis))}`;
  const show = (c: { host: PlacementHost; free: HostResources }) => `${hostLabel(c.host)} (${vcpuText(Math.max(0, c.free.cpuMillis))}, ${mb(Math.max(0, c.free.memoryMb))})`;
  return `no host has both ${vcpuText(needCpu)} and ${mb(need.memoryMb)} free; best candidates: ${show(byMemory[0])}, ${show(byCpu[0])}`;
}

const byId = (a: PlacementHost, b: PlacementHost) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * Round-robin over the feasible hosts in a stable order (by id). `cursor` is
 * the strategy's only memory; the caller keeps the returned `nextCursor`.
 * Reserves nothing: use `planPlacements` for requests with resources.
 */
export function placeRoundRobin(hosts: PlacementHost[], request: PlacementRequest, cursor: number): PlacementDecision {
  const feasible = hosts.filter((h) => infeasibility(h, request) === undefined).sort(byId);
  if (feasible.length === 0) return { placed: false, reason: explainNoFit(hosts, request), nextCursor: cursor };
  const index = ((cursor % feasible.length) + feasible.length) % feasible.length;
  const host = feasible[index];
  return { placed: true, hostId: host.id, reason: `round-robin: ${index + 1} of ${feasible.length} feasible hosts (${host.name})`, nextCursor: cursor + 1 };
}

// ---------------------------------------------------------------------------
// Plans: many requests, each placement reserved before the next is placed

export type PlacementStrategy = 'round-robin' | 'bin-pack' | 'spread' | 'best-of-k';

export interface PlanOptions {
  strategy: PlacementStrategy;
  /** best-of-k: how many feasible hosts to sample per request (default 2). */
  k?: number;
  /** best-of-k: uniform in [0, 1). Required for best-of-k; nothing else is random. */
  random?: () => number;
  /** round-robin: where the last plan left off. */
  cursor?: number;
  /** spread: instances already running, so a plan continues an existing spread. */
  existing?: { hostId: string; group?: string }[];
}

export interface Placement {
  requestIndex: number;
  hostId: string;
  reason: string;
  /**
   * Higher is better among that request's candidates. bin-pack and
   * best-of-k: fullness after placing, 0..1; spread: 1/(1 + instances of the
   * group already on the chosen label value); round-robin: 0.
   */
  score: number;
}

export interface PlacementPlan {
  placements: Placement[];
  unplaced: { requestIndex: number; reason: string }[];
  nextCursor: number;
  /** The hosts as given, with this plan's placements added to `allocated`. Hand these to the next plan. */
  hosts: PlacementHost[];
}

/** A host in the plan's working copy; `host.allocated` grows as the plan reserves. */
interface Working {
  host: PlacementHost;
}

/**
 * Bin-pack fit of `request` on `host` after placing it, 0 (empty) to 1 (full).
 * Nomad's BestFit: 20 − (10^freeCpu + 10^freeMemory), scaled to 0..1, so a
 * host filled evenly in both dimensions scores higher than one filled in one.
 */
export function binPackScore(host: PlacementHost, request: PlacementRequest): number {
  const capacity = host.capacity;
  if (!capacity) return 0;
  const cpu = (host.allocated?.cpuMillis ?? 0) + (request.resources ? cpuMillisOf(request.resources.vcpus) : 0);
  const memory = (host.allocated?.memoryMb ?? 0) + (request.resources?.memoryMb ?? 0);
  const freeCpu = freeFraction(cpu, capacity.cpuMillis);
  const freeMemory = freeFraction(memory, capacity.memoryMb);
  // 10^x as e^(x·ln 10): the same value, several times faster than Math.pow here.
  return (20 - Math.exp(Math.LN10 * freeCpu) - Math.exp(Math.LN10 * freeMemory)) / 18;
}

function freeFraction(allocated: number, capacity: number): number {
  if (capacity <= 0) return 0;
  const free = 1 - allocated / capacity;
  return free < 0 ? 0 : free > 1 ? 1 : free;
}

const round = (n: number) => Math.round(n * 1000) / 1000;
const DEFAULT_GROUP = '';
const NO_VALUE = '(none)';

function checkRequest(request: PlacementRequest, index: number) {
  const r = request.resources;
  if (!r) return;
  if (!Number.isFinite(r.vcpus) || r.vcpus < 0) throw new InvalidArgumentError('vcpus must be a non-negative number', { field: `requests[${index}].resources.vcpus` });
  if (!Number.isFinite(r.memoryMb) || r.memoryMb < 0) throw new InvalidArgumentError('memoryMb must be a non-negative number', { field: `requests[${index}].resources.memoryMb` });
}

/** The plan's working state. */
class PlanState {
  readonly working: Working[];
  /** Instances per spread group per host id (existing + placed by this plan); sparse. */
  private readonly groups = new Map<string, Map<string, number>>();
  /** Statically feasible hosts per request shape: the instances of one component share it. */
  private readonly staticCache = new Map<string, Working[]>();
  private readonly byHostId: Map<string, Working>;

  constructor(hosts: PlacementHost[], existing: PlanOptions['existing']) {
    this.working = hosts
      .map((h) => ({ host: { ...h, ...(h.capacity ? { allocated: { cpuMillis: h.allocated?.cpuMillis ?? 0, memoryMb: h.allocated?.memoryMb ?? 0 } } : {}) } }))
      .sort((a, b) => byId(a.host, b.host));
    this.byHostId = new Map(this.working.map((w) => [w.host.id, w]));
    if (this.byHostId.size !== this.working.length) {
      const twice = this.working.find((w, i) => i > 0 && this.working[i - 1].host.id === w.host.id);
      throw new InvalidArgumentError(`host ${twice?.host.id} is listed twice`, { field: 'hosts' });
    }
    for (const e of existing ?? []) if (this.byHostId.has(e.hostId)) this.count(e.group ?? DEFAULT_GROUP, e.hostId);
  }

  private count(group: string, hostId: string) {
    let perHost = this.groups.get(group);
    if (!perHost) this.groups.set(group, (perHost = new Map()));
    perHost.set(hostId, (perHost.get(hostId) ?? 0) + 1);
  }

  groupOnHost(group: string, hostId: string): number {
    return this.groups.get(group)?.get(hostId) ?? 0;
  }

  /** The group's instances per value of `valueOf` over the whole fleet (hosts that cannot take more still hold theirs). */
  groupPerValue(group: string, valueOf: (w: Working) => string): Map<string, number> {
    const perValue = new Map<string, number>();
    for (const [hostId, n] of this.groups.get(group) ?? []) {
      const w = this.byHostId.get(hostId);
      if (w) perValue.set(valueOf(w), (perValue.get(valueOf(w)) ?? 0) + n);
    }
    return perValue;
  }

  /** Hosts that can take `request` now, in id order. */
  feasible(request: PlacementRequest): Working[] {
    const key = JSON.stringify([request.driver, request.teamId, request.hostPin ?? null, request.hostTeamId ?? null, Object.entries(request.labels ?? {}).sort()]);
    let candidates = this.staticCache.get(key);
    if (!candidates) this.staticCache.set(key, (candidates = this.working.filter((w) => staticInfeasibility(w.host, request) === undefined)));
    return candidates.filter((w) => resourceInfeasibility(w.host, request) === undefined);
  }

  reserve(w: Working, request: PlacementRequest) {
    if (request.resources && w.host.allocated) {
      w.host.allocated = {
        cpuMillis: w.host.allocated.cpuMillis + cpuMillisOf(request.resources.vcpus),
        memoryMb: w.host.allocated.memoryMb + request.resources.memoryMb,
      };
    }
    this.count(request.group ?? DEFAULT_GROUP, w.host.id);
  }

  hostsAfter(original: PlacementHost[]): PlacementHost[] {
    return original.map((h) => this.byHostId.get(h.id)?.host ?? h);
  }
}

/**
 * Places each request in order on the working copy of the fleet, reserving
 * its resources there before the next request, so no host is ever
 * committed beyond `capacity − allocated`. Requests that fit nowhere (at
 * that point) come back in `unplaced` with the reason.
 */
export function planPlacements(hosts: PlacementHost[], requests: PlacementRequest[], options: PlanOptions): PlacementPlan {
  const k = options.k ?? 2;
  if (options.strategy === 'best-of-k') {
    if (!options.random) throw new InvalidArgumentError('best-of-k placement needs a random() to sample with', { field: 'random' });
    if (!Number.isInteger(k) || k < 1) throw new InvalidArgumentError('k must be a whole number of at least 1', { field: 'k' });
  } else if (!STRATEGIES.includes(options.strategy)) {
    throw new InvalidArgumentError(`unknown placement strategy "${String(options.strategy)}"`, { field: 'strategy' });
  }
  requests.forEach(checkRequest);

  const state = new PlanState(hosts, options.existing);
  let cursor = options.cursor ?? 0;
  const placements: Placement[] = [];
  const unplaced: PlacementPlan['unplaced'] = [];

  requests.forEach((request, requestIndex) => {
    const choice = choose(state, request, options, cursor, k);
    if (!choice) {
      const earlier = placements.length > 0 ? ` (after ${placements.length} earlier placement${placements.length === 1 ? '' : 's'} in this plan)` : '';
      unplaced.push({ requestIndex, reason: explainNoFit(state.working.map((w) => w.host), request) + earlier });
      return;
    }
    if (options.strategy === 'round-robin') cursor++;
    state.reserve(choice.working, request);
    placements.push({ requestIndex, hostId: choice.working.host.id, reason: choice.reason, score: round(choice.score) });
  });

  return { placements, unplaced, nextCursor: cursor, hosts: state.hostsAfter(hosts) };
}

const STRATEGIES: readonly PlacementStrategy[] = ['round-robin', 'bin-pack', 'spread', 'best-of-k'];

interface Choice {
  working: Working;
  reason: string;
  score: number;
}

function choose(state: PlanState, request: PlacementRequest, options: PlanOptions, cursor: number, k: number): Choice | undefined {
  if (options.strategy === 'best-of-k') {
    if (!options.random) throw new InvalidArgumentError('best-of-k placement needs a random() to sample with', { field: 'random' });
    return bestOfK(state.working, request, k, options.random);
  }
  const feasible = state.feasible(request);
  if (feasible.length === 0) return undefined;
  if (options.strategy === 'round-robin') {
    const i = ((cursor % feasible.length) + feasible.length) % feasible.length;
    const w = feasible[i];
    return { working: w, score: 0, reason: `round-robin: ${i + 1} of ${feasible.length} feasible hosts (${w.host.name})` };
  }
  if (options.strategy === 'spread') return spread(state, feasible, request);
  let best = feasible[0];
  let bestScore = binPackScore(best.host, request);
  for (let i = 1; i < feasible.length; i++) {
    const score = binPackScore(feasible[i].host, request);
    if (score > bestScore) [best, bestScore] = [feasible[i], score];
  }
  return { working: best, score: bestScore, reason: `bin-pack: ${best.host.name} is the fullest fit (score ${round(bestScore)}${usage(best.host, request)}) of ${feasible.length} feasible hosts` };
}

function usage(host: PlacementHost, request: PlacementRequest): string {
  if (!host.capacity || !request.resources) return '';
  const memory = (host.allocated?.memoryMb ?? 0) + request.resources.memoryMb;
  return `; ${memory}/${host.capacity.memoryMb} MB after placing`;
}

interface SpreadCandidate {
  w: Working;
  value: string;
  valueCount: number;
  hostCount: number;
  fit: number;
}
const better = (c: SpreadCandidate, best: SpreadCandidate) =>
  c.valueCount !== best.valueCount ? c.valueCount < best.valueCount : c.hostCount !== best.hostCount ? c.hostCount < best.hostCount : c.fit < best.fit;

/** Fewest of the group on the label value, then on the host, then the emptiest host, then by id. */
function spread(state: PlanState, feasible: Working[], request: PlacementRequest): Choice {
  const group = request.group ?? DEFAULT_GROUP;
  const by = request.spreadBy;
  const valueOf = (w: Working) => (by === undefined ? w.host.id : (w.host.labels?.[by] ?? NO_VALUE));
  const perValue = state.groupPerValue(group, valueOf);
  const values = new Set<string>();
  let best: SpreadCandidate | undefined;
  for (const w of feasible) {
    const value = valueOf(w);
    values.add(value);
    const valueCount = perValue.get(value) ?? 0;
    if (best && valueCount > best.valueCount) continue;
    const hostCount = state.groupOnHost(group, w.host.id);
    if (best && valueCount === best.valueCount && hostCount > best.hostCount) continue;
    const c: SpreadCandidate = { w, value, valueCount, hostCount, fit: binPackScore(w.host, request) };
    // `feasible` is in id order and only a strictly better host replaces the best, so ties go to the lower id.
    if (!best || better(c, best)) best = c;
  }
  // `feasible` is never empty here.
  const chosen = best as NonNullable<typeof best>;
  const reason =
    by === undefined
      ? `spread: ${chosen.w.host.name} had ${chosen.hostCount} of the group's instances, the fewest of ${feasible.length} feasible hosts`
      : `spread by ${by}: ${by}=${chosen.value} had ${chosen.valueCount} of the group's instances, the fewest of ${values.size} feasible value${values.size === 1 ? '' : 's'} (${chosen.w.host.name} had ${chosen.hostCount})`;
  return { working: chosen.w, score: 1 / (1 + chosen.valueCount), reason };
}

function bestOfK(working: Working[], request: PlacementRequest, k: number, random: () => number): Choice | undefined {
  // Sparrow's "power of K choices": draw hosts uniformly without replacement
  // (a sparse Fisher-Yates over the id-sorted fleet, so O(k) draws when most
  // hosts are feasible) until K feasible ones are found, then bin-pack among them.
  const swapped = new Map<number, number>();
  const sample: { w: Working; score: number }[] = [];
  let drawn = 0;
  for (let remaining = working.length; remaining > 0 && sample.length < k; remaining--) {
    const r = Math.min(remaining - 1, Math.floor(random() * remaining));
    const last = remaining - 1;
    const pick = swapped.get(r) ?? r;
    swapped.set(r, swapped.get(last) ?? last);
    drawn++;
    const w = working[pick];
    if (infeasibility(w.host, request) === undefined) sample.push({ w, score: binPackScore(w.host, request) });
  }
  if (sample.length === 0) return undefined;
  const ranked = [...sample].sort((a, b) => b.score - a.score || byId(a.w.host, b.w.host));
  const best = ranked[0];
  const others = ranked
    .slice(1)
    .map((s) => `${s.w.host.name} ${round(s.score)}`)
    .join(', ');
  return {
    working: best.w,
    score: best.score,
    reason: `best-of-${k}: ${best.w.host.name} scored ${round(best.score)}${others ? ` over ${others}` : ''} (${sample.length} feasible of ${drawn} sampled from ${working.length} hosts)`,
  };
}

// ---------------------------------------------------------------------------
// Reservations the scheduler holds between planning and the host reporting

/**
 * One in-flight reservation: resources promised to an instance that the
 * host's reported `allocated` does not include yet. `key` is the caller's
 * (an instance id).
 */
export interface Reservation {
  key: string;
  hostId: string;
  cpuMillis: number;
  memoryMb: number;
}

/**
 * Pure helpers over a list of reservations. The scheduler keeps the list,
 * and for every plan: `hosts = Reservations.apply(reported, list)`, plan,
 * then `list = Reservations.add(list, Reservations.fromPlan(...))` before
 * its next await, so two deploys planned concurrently cannot both take the
 * same free memory. Release a reservation once the host's reported
 * allocation includes the instance, or the instance is gone.
 */
export const Reservations = {
  fromPlan(plan: Pick<PlacementPlan, 'placements'>, requests: PlacementRequest[], keyOf: (requestIndex: number) => string): Reservation[] {
    return plan.placements.flatMap((p) => {
      const r = requests[p.requestIndex]?.resources;
      return r ? [{ key: keyOf(p.requestIndex), hostId: p.hostId, cpuMillis: cpuMillisOf(r.vcpus), memoryMb: r.memoryMb }] : [];
    });
  },

  /** `more` replaces any reservation with the same key. */
  add(reservations: readonly Reservation[], more: readonly Reservation[]): Reservation[] {
    const keys = new Set(more.map((r) => r.key));
    return [...reservations.filter((r) => !keys.has(r.key)), ...more];
  },

  release(reservations: readonly Reservation[], keys: Iterable<string>): Reservation[] {
    const gone = new Set(keys);
    return reservations.filter((r) => !gone.has(r.key));
  },

  /** Reserved totals per host id. */
  totals(reservations: readonly Reservation[]): Map<string, HostResources> {
    const totals = new Map<string, HostResources>();
    for (const r of reservations) {
      const t = totals.get(r.hostId) ?? { cpuMillis: 0, memoryMb: 0 };
      totals.set(r.hostId, { cpuMillis: t.cpuMillis + r.cpuMillis, memoryMb: t.memoryMb + r.memoryMb });
    }
    return totals;
  },

  /** The hosts with the reservations added to `allocated` (new objects; reservations for unknown hosts are ignored). */
  apply<H extends PlacementHost>(hosts: readonly H[], reservations: readonly Reservation[]): H[] {
    const totals = Reservations.totals(reservations);
    return hosts.map((h) => {
      const t = totals.get(h.id);
      if (!t) return h;
      return { ...h, allocated: { cpuMillis: (h.allocated?.cpuMillis ?? 0) + t.cpuMillis, memoryMb: (h.allocated?.memoryMb ?? 0) + t.memoryMb } };
    });
  },
};
