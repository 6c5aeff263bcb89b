import { ReloadingTlsMaterial } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import type { SchedulerConfig } from '../config';

/**
 * The scheduler's control-plane certificate from its files. A file that
 * cannot be read stops the scheduler at start, naming its variable (never
 * its content: the key is a secret); files replaced later (a re-issued
 * certificate) are picked up for new agent channels without a restart, as
 * long as they hang together (ReloadingTlsMaterial in @corral/grpc).
 */
export function loadAgentTlsMaterial(
  config: Pick<SchedulerConfig, 'agentTlsCaFile' | 'agentTlsCertFile' | 'agentTlsKeyFile'>,
  options: { logger?: Logger; recheckMs?: number } = {},
): ReloadingTlsMaterial | undefined {
  if (!config.agentTlsCaFile || !config.agentTlsCertFile || !config.agentTlsKeyFile) return undefined;
  const files = { caFile: config.agentTlsCaFile, certFile: config.agentTlsCertFile, keyFile: config.agentTlsKeyFile };
  return ReloadingTlsMaterial.load(files, {
    variables: { ca: 'AGENT_TLS_CA_FILE', cert: 'AGENT_TLS_CERT_FILE', key: 'AGENT_TLS_KEY_FILE' },
    recheckMs: options.recheckMs,
    onReload: () => options.logger?.info('agent TLS certificate reloaded from AGENT_TLS_CERT_FILE: new agent channels use it'),
    onRejected: (reason) => options.logger?.warn('agent TLS files changed but were not taken; the previous certificate stays in use', { reason }),
  });
}
