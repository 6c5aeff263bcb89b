export * from './system';
export * from './ports';
export { tailFile } from './tail';
export * from './pki';
