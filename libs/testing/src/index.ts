export * from './ports';
export * from './processes';
export * from './database';
export { describeIfAvailable } from './describe-if-available';
export * from './nats';
export * from './images/busybox-image';
export * from './images/microvm-image';
export * from './local-registry';
export * from './images/unikernel-image';
