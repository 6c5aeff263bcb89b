import { runHealthOnlyService } from '@corral/grpc';

// secrets-broker will own tenant secrets: envelope encryption at rest, a Vault KV v2 adapter and injection at deploy.
// Until that work lands it only joins the system and answers health checks.
runHealthOnlyService({ service: 'secrets-broker', envPrefix: 'SECRETS_BROKER', defaultPort: 50054 });
