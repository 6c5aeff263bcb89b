import { join } from 'node:path';
import { InvalidArgumentError, ResourceExhaustedError } from '@corral/domain';
import type { Logger } from '@corral/logging';
import type { PortMapping } from '../drivers/driver';
import { ensurePrivateDir, readJsonFile, writeJsonAtomic } from '../state/atomic-file';
import { createHostPortProbe, type HostPortProbe } from './host-port-probe';
import { Mutex } from './mutex';
import { validateRoutes, type RouteRequest } from './routes';

// Host ports for workload routes. The table of who holds which port is the
// agent's own (persisted in its state dir, so a restart keeps every
// workload's ports); a port is handed out only when neither the table nor the
// host (a brief bind) says it is taken. One lock serialises allocate and
// release, so two concurrent allocations can never pick the same port.

export interface PortRange {
  /** First port of the range, inclusive. */
  start: number;
  /** Last port of the range, inclusive. */
  end: number;
}

export const DEFAULT_PORT_RANGE: Readonly<PortRange> = { start: 10000, end: 60000 };

/** The file, under the agent's state dir, that holds the table. */
export const PORT_TABLE_FILE = 'ports.json';

/** `"10000-60000"` → `{ start: 10000, end: 60000 }`. */
export function parsePortRange(text: string, field = 'portRange'): PortRange {
  const match = /^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$/.exec(text);
  if (!match) throw new InvalidArgumentError(`${field} must look like 10000-60000`, { field });
  return checkRange({ start: Number(match[1]), end: Number(match[2]) }, field);
}

function checkRange(range: PortRange, field = 'range'): PortRange {
  const ok = Number.isInteger(range.start) && Number.isInteger(range.end) && range.start >= 1 && range.end <= 65535 && range.start <= range.end;
  if (!ok) throw new InvalidArgumentError(`${field} must be ports a-b with 1 <= a <= b <= 65535`, { field });
  return { start: range.start, end: range.end };
}

export interface PortAllocatorOptions {
  /** The agent's state dir; the table is `<stateDir>/ports.json`. */
  stateDir: string;
  logger: Logger;
  /** Default 10000–60000. */
  range?: PortRange;
  /** Default: binds 127.0.0.1 and 0.0.0.0 briefly. Tests pass a fake. */
  probe?: HostPortProbe;
}

interface PortTable {
  version: 1;
  /** Where the next search starts: next-fit, so a just-released port is not handed out again at once. */
  next: number;
  workloads: Record<string, PortMapping[]>;
}

const WORKLOAD_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export class PortAllocator {
  readonly path: string;
  readonly range: Readonly<PortRange>;
  private readonly probe: HostPortProbe;
  private readonly logger: Logger;
  private readonly lock = new Mutex();
  private table: PortTable | undefined;

  constructor(private readonly options: PortAllocatorOptions) {
    this.range = checkRange(options.range ?? DEFAULT_PORT_RANGE);
    this.path = join(options.stateDir, PORT_TABLE_FILE);
    this.probe = options.probe ?? createHostPortProbe();
    this.logger = options.logger.child({ component: 'port-allocator' });
  }

  /** Loads the table; other methods do it on first use. Refuses an unreadable table rather than risk double allocation. */
  init(): Promise<void> {
    return this.lock.run(async () => {
      await this.load();
    });
  }

  /**
   * Host ports for `routes`, in route order. Idempotent: a workload asking
   * again keeps the host port of every route with the same name and
   * protocol (a changed guestPort is updated), gets new ports for new
   * routes and gives up those of routes no longer asked for. An empty list
   * releases everything.
   */
  async allocate(workloadId: string, routes: readonly RouteRequest[]): Promise<PortMapping[]> {
    checkWorkloadId(workloadId);
    validateRoutes(routes);
    return this.lock.run(async () => {
      const table = await this.load();
      const current = table.workloads[workloadId] ?? [];
      const kept = (route: RouteRequest) => current.find((m) => m.name === route.name && m.protocol === route.protocol);
      const wanted = routes.filter((r) => !kept(r));
      const fresh = await this.pick(table, wanted);
      const mappings: PortMapping[] = routes.map((route) => ({
        name: route.name,
        guestPort: route.guestPort,
        hostPort: kept(route)?.hostPort ?? (fresh.get(route) as number),
        protocol: route.protocol,
      }));
      if (sameMappings(current, mappings)) return copy(mappings);

      const next: PortTable = { ...table, workloads: { ...table.workloads } };
      if (mappings.length === 0) delete next.workloads[workloadId];
      else next.workloads[workloadId] = mappings;
      // The search order is the choice order, so the last port chosen is where it stopped.
      if (fresh.size > 0) next.next = this.after([...fresh.values()].at(-1) as number);
      await this.save(next);
      this.logger.debug('ports allocated', { workloadId, ports: mappings.map((m) => m.hostPort) });
      return copy(mappings);
    });
  }

  /** Gives the workload's ports back; returns what it held (nothing when it held none). */
  release(workloadId: string): Promise<PortMapping[]> {
    return this.lock.run(async () => {
      const table = await this.load();
      const held = table.workloads[workloadId];
      if (!held) return [];
      const next: PortTable = { ...table, workloads: { ...table.workloads } };
      delete next.workloads[workloadId];
      await this.save(next);
      this.logger.debug('ports released', { workloadId, ports: held.map((m) => m.hostPort) });
      return copy(held);
    });
  }

  /** The workload's current mappings, undefined when it has none. */
  async get(workloadId: string): Promise<PortMapping[] | undefined> {
    const table = await this.lock.run(() => this.load());
    const held = table.workloads[workloadId];
    return held ? copy(held) : undefined;
  }

  /** Every workload's mappings, for inspection and leak checks against the workload records. */
  async list(): Promise<Record<string, PortMapping[]>> {
    const table = await this.lock.run(() => this.load());
    return Object.fromEntries(Object.entries(table.workloads).map(([id, mappings]) => [id, copy(mappings)]));
  }

  /**
   * One port per route, free in the table and on the host (for the route's
   * protocol), searched next-fit from `table.next` once around the range.
   */
  private async pick(table: PortTable, routes: readonly RouteRequest[]): Promise<Map<RouteRequest, number>> {
    const chosen = new Map<RouteRequest, number>();
    if (routes.length === 0) return chosen;
    const taken = new Set<number>();
    for (const mappings of Object.values(table.workloads)) for (const m of mappings) taken.add(m.hostPort);
    const size = this.range.end - this.range.start + 1;
    let candidate = table.next;
    let routeIndex = 0;
    for (let scanned = 0; scanned < size && routeIndex < routes.length; scanned++, candidate = this.after(candidate)) {
      if (taken.has(candidate)) continue;
      const route = routes[routeIndex];
      if (!(await this.probe.isFree(candidate, route.protocol))) continue;
      chosen.set(route, candidate);
      taken.add(candidate);
      routeIndex++;
    }
    if (routeIndex < routes.length) {
      throw new ResourceExhaustedError(
        `no free host port left in ${this.range.start}-${this.range.end} (${taken.size} held by workloads, the rest in use on the host)`,
      );
    }
    return chosen;
  }

  private after(port: number): number {
    return port >= this.range.end || port < this.range.start ? this.range.start : port + 1;
  }

  private async load(): Promise<PortTable> {
    if (this.table) return this.table;
    await ensurePrivateDir(this.options.stateDir);
    const stored = await readJsonFile<PortTable>(this.path);
    if (stored !== undefined && (stored.version !== 1 || typeof stored.workloads !== 'object' || stored.workloads === null)) {
      throw new Error(`${this.path} is not a port table this agent understands`);
    }
    const table: PortTable = stored ?? { version: 1, next: this.range.start, workloads: {} };
    if (!Number.isInteger(table.next) || table.next < this.range.start || table.next > this.range.end) table.next = this.range.start;
    for (const [workloadId, mappings] of Object.entries(table.workloads)) {
      const outside = mappings.filter((m) => m.hostPort < this.range.start || m.hostPort > this.range.end);
      // Still held, so still taken: a narrowed range only affects new allocations.
      if (outside.length > 0) this.logger.warn('workload holds ports outside the configured range', { workloadId, ports: outside.map((m) => m.hostPort) });
    }
    this.table = table;
    return table;
  }

  /** Persists first: the in-memory table only changes once the file has. */
  private async save(table: PortTable): Promise<void> {
    await writeJsonAtomic(this.path, table);
    this.table = table;
  }
}

function checkWorkloadId(workloadId: string): void {
  if (typeof workloadId !== 'string' || !WORKLOAD_ID.test(workloadId)) {
    throw new InvalidArgumentError(`workloadId must match ${WORKLOAD_ID.source}`, { field: 'workloadId' });
  }
}

function sameMappings(a: readonly PortMapping[], b: readonly PortMapping[]): boolean {
  return a.length === b.length && a.every((m, i) => m.name === b[i].name && m.guestPort === b[i].guestPort && m.hostPort === b[i].hostPort && m.protocol === b[i].protocol);
}

function copy(mappings: readonly PortMapping[]): PortMapping[] {
  return mappings.map((m) => ({ ...m }));
}
