import { planPlacements, type PlacementHost } from '../placement/placement';
import { parseServiceDefinition } from './service-definition';
import { componentPlacementRequest, runtimeDriver } from './service-placement';

describe('componentPlacementRequest', () => {
  const def = parseServiceDefinition(`
name = "shop"
[[components]]
name = "api"
runtime = "container"
image = "shop/api:1"
count = 3
resources = { vcpus = 2, memory_mb = 1024 }
placement = { labels = { tier = "web" }, spread_by = "zone", team = "team-a" }
[[components]]
name = "vm"
runtime = "microvm"
kernel = "/boot/vmlinuz"
placement = { host = "h-2" }
`);

  it('maps runtimes to drivers and placement to constraints', () => {
    expect(runtimeDriver('container')).toBe('podman');
    expect(runtimeDriver('unikernel')).toBe('qemu');
    expect(runtimeDriver('process')).toBe('process');
    expect(componentPlacementRequest(def, def.components[0], 'team-a')).toEqual({
      driver: 'podman',
      teamId: 'team-a',
      resources: { vcpus: 2, memoryMb: 1024 },
      labels: { tier: 'web' },
      hostTeamId: 'team-a',
      spreadBy: 'zone',
      group: 'shop/api',
    });
    expect(componentPlacementRequest('shop', def.components[1], null)).toEqual({
      driver: 'qemu',
      teamId: null,
      resources: { vcpus: 1, memoryMb: 256 },
      hostPin: 'h-2',
      group: 'shop/vm',
    });
  });

  it('feeds planPlacements: one request per instance', () => {
    const host = (id: string, zone: string): PlacementHost => ({
      id,
      name: id,
      status: 'online',
      teamId: 'team-a',
      drivers: [{ name: 'podman', healthy: true }],
      capacity: { cpuMillis: 4000, memoryMb: 4096 },
      allocated: { cpuMillis: 0, memoryMb: 0 },
      labels: { tier: 'web', zone },
    });
    const api = def.components[0];
    const requests = Array.from({ length: api.count }, () => componentPlacementRequest(def, api, 'team-a'));
    const plan = planPlacements([host('h-1', 'a'), host('h-2', 'b')], requests, { strategy: 'spread' });
    expect(plan.placements.map((p) => p.hostId)).toEqual(['h-1', 'h-2', 'h-1']);
    expect(plan.unplaced).toEqual([]);
  });
});
