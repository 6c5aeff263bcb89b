import type { PlacementRequest } from '../placement/placement';
import type { ComponentDefinition, ComponentRuntime, ServiceDefinition } from './service-definition';

// From a component of a definition to what placement needs to know about
// one of its instances.

const DRIVERS: Record<ComponentRuntime, string> = {
  container: 'podman',
  microvm: 'qemu',
  unikernel: 'qemu',
  process: 'process',
};

/** The node-agent driver that runs a runtime (`container` → `podman`, `microvm`/`unikernel` → `qemu`). */
export function runtimeDriver(runtime: ComponentRuntime): string {
  return DRIVERS[runtime];
}

/** The spread group of a component's instances: `<service>/<component>`. */
export const componentGroup = (service: string, component: string) => `${service}/${component}`;

/**
 * The placement request for one instance of `component`. `teamId` is the
 * deploying team (null for the platform); authorising `placement.team`
 * (that the deployer may use that team's hosts) is the caller's job.
 */
export function componentPlacementRequest(service: ServiceDefinition | string, component: ComponentDefinition, teamId: string | null): PlacementRequest {
  const serviceName = typeof service === 'string' ? service : service.name;
  return {
    driver: runtimeDriver(component.runtime),
    teamId,
    resources: { vcpus: component.resources.vcpus, memoryMb: component.resources.memoryMb },
    ...(Object.keys(component.placement.labels).length > 0 ? { labels: { ...component.placement.labels } } : {}),
    ...(component.placement.host !== undefined ? { hostPin: component.placement.host } : {}),
    ...(component.placement.team !== undefined ? { hostTeamId: component.placement.team } : {}),
    ...(component.placement.spreadBy !== undefined ? { spreadBy: component.placement.spreadBy } : {}),
    group: componentGroup(serviceName, component.name),
  };
}
