export * from './keys/key-pair';
export * from './identity/workload-identity';
export * from './requests/certificate-request';
export * from './authority/certificate-authority';
export * from './files/pki-files';
export * from './authority/ca-pin';
export * from './authority/server-certificate';
