// @corral/events: NATS subjects, typed events and the event bus (DESIGN §2).

export {
  InvalidSubjectTokenError,
  SUBJECT_ROOT,
  SubjectPatterns,
  Subjects,
  assertQueueGroup,
  assertSubjectToken,
  driftSubject,
  fleetAlarmSubject,
  hostEventsSubject,
  hostHeartbeatSubject,
  isValidSubjectToken,
  workloadStateSubject,
  type SubjectFamily,
} from './subjects';
export { isValidPublishSubject, isValidSubscribeSubject, subjectMatches } from './sublist';
export {
  EventBusError,
  type BusLogger,
  type BusStatus,
  type Codec,
  type Delivery,
  type EventBus,
  type EventBusErrorCode,
  type EventHandler,
  type EventSubscription,
  type StatusListener,
  type SubscribeOptions,
  type Topic,
} from './event-bus';
export { Topics, defineTopic, protoCodec, type ProtoMessageFns } from './topics';
export { backoffDelay, connectEventBus, type EventBusOptions, type ReconnectBackoff } from './bus';
export { InMemoryEventBus, InMemoryEventHub, createInMemoryEventBus, type InMemoryEventBusOptions } from './memory-bus';
export {
  HeartbeatGate,
  SequenceGate,
  type GateDecision,
  type HeartbeatGateOptions,
  type HeartbeatOrder,
  type HeartbeatPosition,
} from './ordering';
export { startEmbeddedBroker, type BrokerStats, type EmbeddedBroker, type EmbeddedBrokerOptions } from './embedded';
