import { createClient, Metadata, type PromiseClient } from '@corral/grpc';
import { apiV1 } from '@corral/proto';
import { UsageError } from '../usage-error';

export type CorralClient = PromiseClient<apiV1.CorralServiceClient>;

export const DEFAULT_ADDR = '127.0.0.1:50050';

export interface ConnectionOptions {
  addr: string;
  apiKey?: string;
  deadlineMs?: number;
}

/** A client of the gateway's public gRPC API that sends the API key on every call. */
export function connect(options: ConnectionOptions): CorralClient {
  const metadata = authMetadata(options.apiKey);
  return createClient(apiV1.CorralServiceClient, options.addr, {
    deadlineMs: options.deadlineMs ?? 30_000,
    metadata: () => metadata.clone(),
  });
}

/** "authorization: Bearer <key>" call metadata; a UsageError without a key. */
export function authMetadata(key: string | undefined): Metadata {
  const apiKey = key?.trim();
  if (!apiKey) throw new UsageError('no API key: set CORRAL_API_KEY or pass --api-key');
  const metadata = new Metadata();
  metadata.set('authorization', `Bearer ${apiKey}`);
  return metadata;
}
