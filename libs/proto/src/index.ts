// Generated contracts. Each proto package is exported as a namespace because
// several define messages of the same name (the public API and host-registry
// both have CreateRegistrationTokenRequest); the shared types are also
// exported by name.
export * as commonV1 from './gen/corral/common/v1/types';
export * as eventsV1 from './gen/corral/events/v1/events';
export * as agentV1 from './gen/corral/agent/v1/agent';
export * as apiV1 from './gen/corral/api/v1/api';
export * as hostRegistryV1 from './gen/corral/hostregistry/v1/host_registry';
export * as schedulerV1 from './gen/corral/scheduler/v1/scheduler';
export { InstanceState, HostStatus, Resources, DriverFingerprint } from './gen/corral/common/v1/types';
export { HostHeartbeat, WorkloadStatus, WorkloadStateChanged } from './gen/corral/events/v1/events';
export type { MessageFns } from './gen/corral/common/v1/types';
