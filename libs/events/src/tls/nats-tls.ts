import { readFileSync } from 'node:fs';
import { optionalStr } from '@corral/config';

// TLS to NATS, the same three variables in every service that connects:
// NATS_TLS_CA_FILE (the CA that signed the server's certificate; the
// server's name is checked against the URL's host), and NATS_TLS_CERT_FILE
// + NATS_TLS_KEY_FILE (both or neither) when the server asks clients for a
// certificate. The embedded broker (libs/events/src/embedded) speaks no
// TLS: it is for one machine only.

export interface NatsTlsOptions {
  /** PEM file of the CA to trust for the server's certificate. */
  readonly caFile?: string;
  /** PEM client certificate, with `keyFile`, for servers that verify clients. */
  readonly certFile?: string;
  /** A secret: read, never logged. */
  readonly keyFile?: string;
}

export const NATS_TLS_VARIABLES = { caFile: 'NATS_TLS_CA_FILE', certFile: 'NATS_TLS_CERT_FILE', keyFile: 'NATS_TLS_KEY_FILE' } as const;

/** Spread into a service's config schema. */
export const natsTlsConfigSchema = {
  natsTlsCaFile: optionalStr(NATS_TLS_VARIABLES.caFile),
  natsTlsCertFile: optionalStr(NATS_TLS_VARIABLES.certFile),
  natsTlsKeyFile: optionalStr(NATS_TLS_VARIABLES.keyFile),
};

export interface NatsTlsConfig {
  readonly natsTlsCaFile?: string;
  readonly natsTlsCertFile?: string;
  readonly natsTlsKeyFile?: string;
}

/** Problems with the NATS TLS variables, for a service's ConfigError (cert and key go together). */
export function natsTlsConfigProblems(config: NatsTlsConfig): string[] {
  if ((config.natsTlsCertFile === undefined) === (config.natsTlsKeyFile === undefined)) return [];
  return [
    config.natsTlsCertFile === undefined
      ? `${NATS_TLS_VARIABLES.certFile} is required when ${NATS_TLS_VARIABLES.keyFile} is set`
      : `${NATS_TLS_VARIABLES.keyFile} is required when ${NATS_TLS_VARIABLES.certFile} is set`,
  ];
}

/** The TLS options for connectEventBus, or undefined when none of the variables is set (plaintext). */
export function natsTlsOf(config: NatsTlsConfig): NatsTlsOptions | undefined {
  if (!config.natsTlsCaFile && !config.natsTlsCertFile && !config.natsTlsKeyFile) return undefined;
  return { caFile: config.natsTlsCaFile, certFile: config.natsTlsCertFile, keyFile: config.natsTlsKeyFile };
}

export interface LoadedNatsTls {
  ca?: string;
  cert?: string;
  key?: string;
}

/**
 * Reads the files once, at connect: a file that cannot be read fails the
 * start naming its variable and path, never its content.
 */
export function loadNatsTls(options: NatsTlsOptions): LoadedNatsTls {
  if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
    throw new Error(`NATS TLS: ${NATS_TLS_VARIABLES.certFile} and ${NATS_TLS_VARIABLES.keyFile} go together`);
  }
  const read = (path: string | undefined, variable: string) => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new Error(`${variable}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
  const loaded: LoadedNatsTls = {};
  const ca = read(options.caFile, NATS_TLS_VARIABLES.caFile);
  const cert = read(options.certFile, NATS_TLS_VARIABLES.certFile);
  const key = read(options.keyFile, NATS_TLS_VARIABLES.keyFile);
  if (ca !== undefined) {
    if (!ca.includes('BEGIN CERTIFICATE')) throw new Error(`${NATS_TLS_VARIABLES.caFile} is not a PEM certificate`);
    loaded.ca = ca;
  }
  if (cert !== undefined) {
    if (!cert.includes('BEGIN CERTIFICATE')) throw new Error(`${NATS_TLS_VARIABLES.certFile} is not a PEM certificate`);
    loaded.cert = cert;
  }
  if (key !== undefined) {
    if (!key.includes('PRIVATE KEY')) throw new Error(`${NATS_TLS_VARIABLES.keyFile} is not a PEM private key`);
    loaded.key = key;
  }
  return loaded;
}
