// The conformance table of the embedded broker, run against a real
// nats-server so the two are known to behave alike.

import { brokerConformance } from '../__tests__/broker-conformance';
import { natsUrlFromEnv } from '../__tests__/helpers';

const url = natsUrlFromEnv('broker conformance on nats-server');

(url ? describe : describe.skip)('broker conformance on nats-server', () => {
  brokerConformance(async () => ({ url: url as string, stop: async () => undefined }));
});
