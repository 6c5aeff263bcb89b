export { startEmbeddedBroker, type BrokerStats, type EmbeddedBroker, type EmbeddedBrokerOptions } from './broker';
