import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { caFilesIn, createCaFiles, issueControlPlaneCertificateFiles } from '@corral/pki';
import type { TlsMaterial } from '@corral/grpc';

// Mutual TLS for the local system, on by default: the CA is created once
// under <dataDir>/pki (its key 0600) and kept across starts, so agents'
// stored certificates stay valid; the scheduler's client certificate and
// the launcher's own (for waiting on the agent's health) are re-issued on
// every start, so they never run out.

export interface LocalPki {
  dir: string;
  /** For host-registry: it issues hosts' certificates. */
  hostRegistryEnv: Record<string, string>;
  /** For the scheduler: its control-plane certificate towards agents. */
  schedulerEnv: Record<string, string>;
  /** The launcher's control-plane certificate (service `launcher`), for health probes. */
  launcher: TlsMaterial;
}

export async function ensureLocalPki(dataDir: string): Promise<LocalPki> {
  const dir = join(dataDir, 'pki');
  const ca = await createCaFiles(dir, { reuseExisting: true, commonName: 'Corral local CA' });
  const scheduler = await issueControlPlaneCertificateFiles({ caDir: dir, outDir: dir, service: 'scheduler', validForDays: 30 });
  const launcher = await issueControlPlaneCertificateFiles({ caDir: dir, outDir: dir, service: 'launcher', validForDays: 30 });
  return {
    dir,
    hostRegistryEnv: { CORRAL_CA_CERT_FILE: ca.certificateFile, CORRAL_CA_KEY_FILE: ca.privateKeyFile },
    schedulerEnv: { AGENT_TLS_CA_FILE: scheduler.caCertificateFile, AGENT_TLS_CERT_FILE: scheduler.certificateFile, AGENT_TLS_KEY_FILE: scheduler.privateKeyFile },
    launcher: {
      caCertificatePem: readFileSync(caFilesIn(dir).certificateFile, 'utf8'),
      certificatePem: readFileSync(launcher.certificateFile, 'utf8'),
      privateKeyPem: readFileSync(launcher.privateKeyFile, 'utf8'),
    },
  };
}
