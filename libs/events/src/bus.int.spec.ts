// The same bus contract against a real nats-server, given by NATS_URL.

import { busContract } from './__tests__/bus-contract';
import { natsUrlFromEnv } from './__tests__/helpers';
import { natsBusFixture } from './__tests__/nats-fixture';

const url = natsUrlFromEnv('NATS event bus on nats-server');

(url ? describe : describe.skip)('NATS event bus on nats-server', () => {
  busContract(() => natsBusFixture(url as string));
});
