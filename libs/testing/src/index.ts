export * from './ports';
export * from './database';
export * from './nats';
export * from './images/busybox-image';
export * from './images/microvm-image';
