import { runHealthOnlyService } from '@corral/grpc';

// edge-router will own the TLS edge: L7 routes, certificates (ACME and an internal CA) and the reverse proxy.
// Until that work lands it only joins the system and answers health checks.
runHealthOnlyService({ service: 'edge-router', envPrefix: 'EDGE_ROUTER', defaultPort: 50053 });
