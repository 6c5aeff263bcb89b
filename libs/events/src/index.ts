// @corral/events: NATS subjects, typed events and the event bus (DESIGN §2).

export {
  InvalidSubjectTokenError,
  SUBJECT_ROOT,
  SubjectPatterns,
  Subjects,
  assertQueueGroup,
  assertSubjectToken,
  auditSubject,
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
export {
  NATS_SUBJECT_NAMESPACE_VARIABLE,
  natsNamespaceConfigSchema,
  subjectNamespace,
  type NatsNamespaceConfig,
  type SubjectNamespace,
} from './namespace';
export {
  NATS_TLS_VARIABLES,
  loadNatsTls,
  natsTlsConfigProblems,
  natsTlsConfigSchema,
  natsTlsOf,
  type NatsTlsConfig,
  type NatsTlsOptions,
} from './tls/nats-tls';
export { natsServerConfigText, writeNatsServerConfig, type NatsServerConfig } from './tls/nats-server-config';
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
export { auditEventMessage, publishAuditEvent, type AuditEventFields } from './audit';
export { CredentialRefusalNotifier, type CredentialRefusalNotifierOptions, type RefusedMessageKind } from './credential-notices';
