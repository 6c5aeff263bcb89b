import { InvalidArgumentError } from '@corral/domain';
import type { PortMapping } from '../drivers/driver';

// Routes name the ports a workload listens on; each gets a host port from
// the allocator and a `$PORT_<NAME>` variable in the workload's environment.

export type PortProtocol = PortMapping['protocol'];

export interface RouteRequest {
  /** `^[a-z][a-z0-9-]{0,31}$`; `$PORT_<NAME>` upper-cases it and turns `-` into `_`. */
  name: string;
  /** The port the workload listens on inside its sandbox. */
  guestPort: number;
  protocol: PortProtocol;
}

export const ROUTE_NAME_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;
const PROTOCOLS: readonly string[] = ['tcp', 'udp'];

/**
 * Checks names, ports and protocols, and that names are unique (their
 * variables would collide otherwise). Errors name the offending field, e.g.
 * `routes[2].name`.
 */
export function validateRoutes(routes: readonly RouteRequest[], field = 'routes'): void {
  if (!Array.isArray(routes)) throw new InvalidArgumentError(`${field} must be a list`, { field });
  const seen = new Set<string>();
  routes.forEach((route, i) => {
    const at = `${field}[${i}]`;
    if (typeof route !== 'object' || route === null) throw new InvalidArgumentError(`${at} must be an object`, { field: at });
    if (typeof route.name !== 'string' || !ROUTE_NAME_PATTERN.test(route.name)) {
      throw new InvalidArgumentError(`${at}.name must match ${ROUTE_NAME_PATTERN.source}`, { field: `${at}.name` });
    }
    if (seen.has(route.name)) throw new InvalidArgumentError(`${at}.name ${JSON.stringify(route.name)} is used twice`, { field: `${at}.name` });
    seen.add(route.name);
    if (!Number.isInteger(route.guestPort) || route.guestPort < 1 || route.guestPort > 65535) {
      throw new InvalidArgumentError(`${at}.guestPort must be an integer from 1 to 65535`, { field: `${at}.guestPort` });
    }
    if (!PROTOCOLS.includes(route.protocol)) throw new InvalidArgumentError(`${at}.protocol must be tcp or udp`, { field: `${at}.protocol` });
  });
}

/** `web-admin` → `PORT_WEB_ADMIN`. */
export function portVariableName(routeName: string): string {
  return `PORT_${routeName.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

export interface PortEnvOptions {
  /**
   * Which side of each mapping the variables carry. `guestPort` (default)
   * for sandboxed drivers (podman, qemu) where the host port forwards to the
   * guest port; `hostPort` for a driver that runs the workload in the host's
   * own network namespace (the process driver), where nothing forwards and
   * the workload must listen on the host port itself.
   */
  listenOn?: 'guestPort' | 'hostPort';
}

/**
 * The environment a workload gets for its ports. Like Fly and Heroku, the
 * variables tell the workload where to LISTEN: `$PORT` is the first route's
 * port and `$PORT_<NAME>` each route's, both the guest port by default (the
 * host port is the control plane's business: it is what the edge routes to).
 * No mappings, no variables.
 */
export function portEnv(mappings: readonly PortMapping[], options: PortEnvOptions = {}): Record<string, string> {
  validateRoutes(mappings, 'ports');
  const side = options.listenOn ?? 'guestPort';
  const env: Record<string, string> = {};
  if (mappings.length === 0) return env;
  env.PORT = String(mappings[0][side]);
  for (const mapping of mappings) env[portVariableName(mapping.name)] = String(mapping[side]);
  return env;
}
