export * from './errors/errors';
export * from './lifecycle/instance-state';
export * from './workloads/workload-spec';
export * from './placement/placement';
export * from './services/service-schema';
export * from './services/service-definition';
export * from './services/service-plan';
export * from './services/service-placement';
