// Contract fixture for the NATS bus on any NATS-protocol server.

import { connect } from 'nats';
import { connectEventBus } from '../bus';
import type { BusFixture } from './bus-contract';

export async function natsBusFixture(url: string, stopServer?: () => Promise<void>): Promise<BusFixture> {
  // A plain client for bytes no bus would publish (malformed or forged).
  const raw = await connect({ servers: url, name: 'corral-events-contract-raw' });
  return {
    connect: (logger, namespace) => connectEventBus({ url, name: 'corral-events-contract', logger, namespace }),
    publishRaw: async (subject, data) => {
      raw.publish(subject, data);
      await raw.flush();
    },
    stop: async () => {
      await raw.close();
      await stopServer?.();
    },
  };
}
