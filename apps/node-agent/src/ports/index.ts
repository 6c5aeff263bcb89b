export { DEFAULT_PORT_RANGE, PORT_TABLE_FILE, PortAllocator, parsePortRange } from './port-allocator';
export type { PortAllocatorOptions, PortRange } from './port-allocator';
export { PROBE_ADDRESSES, createHostPortProbe } from './host-port-probe';
export type { HostPortProbe } from './host-port-probe';
export { ROUTE_NAME_PATTERN, portEnv, portVariableName, validateRoutes } from './routes';
export type { PortEnvOptions, PortProtocol, RouteRequest } from './routes';
export { Mutex } from './mutex';
