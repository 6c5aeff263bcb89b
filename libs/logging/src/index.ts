export * from './logger';
export { redact, REDACTED, SECRET_KEY_PATTERN } from './redact';
