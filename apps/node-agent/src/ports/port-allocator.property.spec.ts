import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { ResourceExhaustedError } from '@corral/domain';
import { silentLogger } from '@corral/logging';
import type { HostPortProbe } from './host-port-probe';
import { PortAllocator } from './port-allocator';
import type { RouteRequest } from './routes';

// Properties over random sequences of allocate/release against a small
// range, with a host that holds a random few ports of its own.

const routesOf = (count: number): RouteRequest[] =>
  Array.from({ length: count }, (_, i) => ({ name: `r${i}`, guestPort: 8000 + i, protocol: i % 3 === 2 ? 'udp' : 'tcp' }));

type Op = { kind: 'allocate'; workload: number; routes: number } | { kind: 'release'; workload: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('allocate' as const), workload: fc.nat(7), routes: fc.integer({ min: 0, max: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('release' as const), workload: fc.nat(7) }) },
);

describe('PortAllocator properties', () => {
  let dirs: string[] = [];
  const freshDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'corral-ports-prop-'));
    dirs.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    dirs = [];
  });

  it('allocations never overlap, stay in range, avoid host-held ports and survive a restart', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1000, max: 60000 }),
        fc.integer({ min: 1, max: 24 }),
        fc.uniqueArray(fc.nat(23), { maxLength: 4 }),
        fc.array(opArb, { maxLength: 25 }),
        async (start, size, busyOffsets, ops) => {
          const range = { start, end: start + size - 1 };
          const busy = new Set(busyOffsets.map((o) => start + o));
          const probe: HostPortProbe = { isFree: async (port) => !busy.has(port) };
          const stateDir = freshDir();
          const ports = new PortAllocator({ stateDir, logger: silentLogger, range, probe });
          const held = new Map<string, number>();
          for (const op of ops) {
            const id = `w${op.workload}`;
            if (op.kind === 'release') {
              await ports.release(id);
              held.delete(id);
              continue;
            }
            try {
              const mappings = await ports.allocate(id, routesOf(op.routes));
              held.set(id, mappings.length);
            } catch (err) {
              if (!(err instanceof ResourceExhaustedError)) throw err;
              // Only when the range truly has too few ports: routes it already
              // holds (same name and protocol) keep theirs, the rest need free ones.
              const current = held.get(id) ?? 0;
              const needed = Math.max(0, op.routes - current);
              const inUse = [...held.values()].reduce((sum, n) => sum + n, 0);
              const usable = size - busy.size;
              expect(needed).toBeGreaterThan(usable - inUse);
            }
          }
          const table = await ports.list();
          const all = Object.values(table).flat().map((m) => m.hostPort);
          expect(new Set(all).size).toBe(all.length);
          for (const port of all) {
            expect(port).toBeGreaterThanOrEqual(range.start);
            expect(port).toBeLessThanOrEqual(range.end);
            expect(busy.has(port)).toBe(false);
          }
          const restarted = new PortAllocator({ stateDir, logger: silentLogger, range, probe });
          expect(await restarted.list()).toEqual(table);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('concurrent allocations of many workloads never share a port', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 2, maxLength: 12 }), async (counts) => {
        const total = counts.reduce((a, b) => a + b, 0);
        const ports = new PortAllocator({ stateDir: freshDir(), logger: silentLogger, range: { start: 30000, end: 30000 + total - 1 }, probe: { isFree: async () => true } });
        const results = await Promise.all(counts.map((n, i) => ports.allocate(`w${i}`, routesOf(n))));
        const all = results.flat().map((m) => m.hostPort);
        expect(new Set(all).size).toBe(total);
      }),
      { numRuns: 30 },
    );
  });

  it('release then allocate reuses the released ports when nothing else is free', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 8 }), fc.nat(), async (counts, pick) => {
        const total = counts.reduce((a, b) => a + b, 0);
        const ports = new PortAllocator({ stateDir: freshDir(), logger: silentLogger, range: { start: 40000, end: 40000 + total - 1 }, probe: { isFree: async () => true } });
        for (const [i, n] of counts.entries()) await ports.allocate(`w${i}`, routesOf(n));
        const victim = pick % counts.length;
        const freed = (await ports.release(`w${victim}`)).map((m) => m.hostPort).sort();
        await expect(ports.allocate('extra', routesOf(counts[victim] + 1))).rejects.toBeInstanceOf(ResourceExhaustedError);
        const reused = (await ports.allocate('newcomer', routesOf(counts[victim]))).map((m) => m.hostPort).sort();
        expect(reused).toEqual(freed);
      }),
      { numRuns: 30 },
    );
  });
});
