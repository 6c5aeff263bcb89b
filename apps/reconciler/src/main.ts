import { runHealthOnlyService } from '@corral/grpc';

// reconciler will own desired-vs-actual reconciliation: orphans, stuck provisioning, drift, purge.
// Until that work lands it only joins the system and answers health checks.
runHealthOnlyService({ service: 'reconciler', envPrefix: 'RECONCILER', defaultPort: 50055 });
