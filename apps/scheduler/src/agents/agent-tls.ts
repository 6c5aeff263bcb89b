import { readFileSync } from 'node:fs';
import { FailedPreconditionError } from '@corral/domain';
import type { TlsMaterial } from '@corral/grpc';
import type { SchedulerConfig } from '../config';

/**
 * The scheduler's control-plane certificate, read once at start. A file that
 * cannot be read stops the scheduler, naming its variable (never its content:
 * the key is a secret).
 */
export function loadAgentTlsMaterial(config: Pick<SchedulerConfig, 'agentTlsCaFile' | 'agentTlsCertFile' | 'agentTlsKeyFile'>): TlsMaterial | undefined {
  if (!config.agentTlsCaFile || !config.agentTlsCertFile || !config.agentTlsKeyFile) return undefined;
  const read = (path: string, variable: string) => {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new FailedPreconditionError(`${variable}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
  const material = {
    caCertificatePem: read(config.agentTlsCaFile, 'AGENT_TLS_CA_FILE'),
    certificatePem: read(config.agentTlsCertFile, 'AGENT_TLS_CERT_FILE'),
    privateKeyPem: read(config.agentTlsKeyFile, 'AGENT_TLS_KEY_FILE'),
  };
  if (!material.caCertificatePem.includes('BEGIN CERTIFICATE')) throw new FailedPreconditionError('AGENT_TLS_CA_FILE is not a PEM certificate');
  if (!material.certificatePem.includes('BEGIN CERTIFICATE')) throw new FailedPreconditionError('AGENT_TLS_CERT_FILE is not a PEM certificate');
  if (!material.privateKeyPem.includes('PRIVATE KEY')) throw new FailedPreconditionError('AGENT_TLS_KEY_FILE is not a PEM private key');
  return material;
}
