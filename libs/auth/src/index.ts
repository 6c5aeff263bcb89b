export {
  API_KEY_NAME_MAX_LENGTH,
  LAST_USED_RESOLUTION_MS,
  authenticateApiKey,
  issueApiKey,
  revokeApiKey,
} from './api-keys/api-keys';
export type { AuthenticateOptions, AuthenticatedKey, Db, IssueApiKeyInput, IssuedApiKey } from './api-keys/api-keys';
export { API_KEY_SCHEME, apiKeyPrefixOf, generateApiKey, hashApiKey } from './api-keys/key-format';
export { BOOTSTRAP_ADMIN_KEY_NAME, ensureFirstAdminKey, reissueAdminKey } from './admin-bootstrap/admin-bootstrap';
export type { ReissuedAdminKey } from './admin-bootstrap/admin-bootstrap';
export { HostTokenGate } from './host-tokens/host-token-gate';
export type { AuthenticateHostToken, HostTokenCheck, HostTokenGateOptions } from './host-tokens/host-token-gate';
export { JwksHostTokenVerifier } from './host-tokens/jwks-host-token-verifier';
export type { JwksHostTokenVerifierOptions, PublishedJwk, PublishedJwks } from './host-tokens/jwks-host-token-verifier';
