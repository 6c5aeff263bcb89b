import { credentials, makeClientConstructor, type ChannelCredentials } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { tlsChannelOptions } from '../tls/tls-server-name';

const HealthClient = makeClientConstructor(healthService, 'grpc.health.v1.Health');

/** Asks a server's grpc.health.v1 for one service ('' = the whole server). */
export function checkHealth(
  address: string,
  service = '',
  options: { deadlineMs?: number; credentials?: ChannelCredentials } = {},
): Promise<'SERVING' | 'NOT_SERVING' | 'UNKNOWN' | 'SERVICE_UNKNOWN'> {
  const client = new HealthClient(address, options.credentials ?? credentials.createInsecure(), tlsChannelOptions(options.credentials));
  return new Promise((resolve, reject) => {
    client.check({ service }, { deadline: new Date(Date.now() + (options.deadlineMs ?? 2000)) }, (err: Error | null, res: { status: string }) => {
      client.close();
      if (err) reject(err);
      else resolve(res.status as 'SERVING');
    });
  });
}
