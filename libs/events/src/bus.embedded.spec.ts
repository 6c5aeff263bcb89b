// The NATS bus against the embedded broker: runs everywhere, no NATS_URL.

import { startEmbeddedBroker } from './embedded';
import { busContract } from './__tests__/bus-contract';
import { natsBusFixture } from './__tests__/nats-fixture';

describe('NATS event bus on the embedded broker', () => {
  busContract(async () => {
    const broker = await startEmbeddedBroker();
    return natsBusFixture(broker.url, () => broker.stop());
  });
});
