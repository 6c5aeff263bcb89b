import { ReloadingTlsMaterial } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import type { ReconcilerConfig } from '../config';

/**
 * The reconciler's control-plane certificate for agents from its files. A
 * file that cannot be read stops the reconciler at start, naming its
 * variable (never its content: the key is a secret); files replaced later
 * (the launcher's renewal, `corral tls cert create`) are picked up for new
 * agent channels without a restart, as long as they hang together
 * (ReloadingTlsMaterial in @corral/grpc, as the scheduler does).
 */
export function loadAgentTlsMaterial(
  config: Pick<ReconcilerConfig, 'agentTlsCaFile' | 'agentTlsCertFile' | 'agentTlsKeyFile'>,
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
