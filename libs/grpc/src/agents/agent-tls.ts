import { optionalStr } from '@corral/config';
import type { Logger } from '@corral/logging';
import { ReloadingTlsMaterial } from '../tls/reloading-tls-material';

// The control-plane certificate a service presents to agents, the same
// three variables in every service that calls them (all three or none;
// `corral tls cert create --service <name>`).

export const AGENT_TLS_VARIABLES = ['AGENT_TLS_CA_FILE', 'AGENT_TLS_CERT_FILE', 'AGENT_TLS_KEY_FILE'] as const;

/** Spread into a service's config schema. */
export const agentTlsConfigSchema = {
  agentTlsCaFile: optionalStr('AGENT_TLS_CA_FILE'),
  agentTlsCertFile: optionalStr('AGENT_TLS_CERT_FILE'),
  agentTlsKeyFile: optionalStr('AGENT_TLS_KEY_FILE'),
};

export interface AgentTlsConfig {
  readonly agentTlsCaFile?: string;
  readonly agentTlsCertFile?: string;
  readonly agentTlsKeyFile?: string;
}

/** Problems with the AGENT_TLS_* variables, for a service's ConfigError (all three or none). */
export function agentTlsConfigProblems(config: AgentTlsConfig): string[] {
  const files = [config.agentTlsCaFile, config.agentTlsCertFile, config.agentTlsKeyFile];
  if (!files.some((f) => f !== undefined) || !files.some((f) => f === undefined)) return [];
  const missing = AGENT_TLS_VARIABLES.filter((_, i) => files[i] === undefined);
  return [`${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} required when any of ${AGENT_TLS_VARIABLES.join(', ')} is set`];
}

/**
 * The control-plane certificate for agents from its files, or undefined
 * when none is configured (plaintext). A file that cannot be read stops the
 * service at start, naming its variable (never its content: the key is a
 * secret); files replaced later (the launcher's renewal, `corral tls cert
 * create`) are picked up for new agent channels without a restart, as long
 * as they hang together (ReloadingTlsMaterial).
 */
export function loadAgentTlsMaterial(config: AgentTlsConfig, options: { logger?: Logger; recheckMs?: number } = {}): ReloadingTlsMaterial | undefined {
  if (!config.agentTlsCaFile || !config.agentTlsCertFile || !config.agentTlsKeyFile) return undefined;
  const files = { caFile: config.agentTlsCaFile, certFile: config.agentTlsCertFile, keyFile: config.agentTlsKeyFile };
  return ReloadingTlsMaterial.load(files, {
    variables: { ca: 'AGENT_TLS_CA_FILE', cert: 'AGENT_TLS_CERT_FILE', key: 'AGENT_TLS_KEY_FILE' },
    recheckMs: options.recheckMs,
    onReload: () => options.logger?.info('agent TLS certificate reloaded from AGENT_TLS_CERT_FILE: new agent channels use it'),
    onRejected: (reason) => options.logger?.warn('agent TLS files changed but were not taken; the previous certificate stays in use', { reason }),
  });
}
