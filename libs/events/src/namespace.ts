// Subject namespaces: several Corral deployments may share one NATS server
// (CI runs many e2e systems on one broker; staging next to production).
// Each bus prefixes every subject it publishes or subscribes with
// `<namespace>.`, and strips it again on receipt, so topics, handlers and
// Delivery subjects look the same whatever the namespace, and two
// deployments with different namespaces never hear each other. The empty
// namespace (the default) is today's bare `corral.…` subjects.
//
// NATS queue groups are scoped to the subject, so a prefixed subject gives
// the groups their own scope too: they need no prefix of their own.

import { str } from '@corral/config';
import { assertSubjectToken } from './subjects';

export const NATS_SUBJECT_NAMESPACE_VARIABLE = 'NATS_SUBJECT_NAMESPACE';

// One subject token: no '.', wildcards, whitespace or control characters
// (the same rule as assertSubjectToken, as a config pattern).
// eslint-disable-next-line no-control-regex
const NAMESPACE_PATTERN = /^[^.*>\s\u0000-\u001f\u007f]+$/u;

/** Spread into a service's config schema, next to natsTlsConfigSchema. */
export const natsNamespaceConfigSchema = {
  natsSubjectNamespace: str(NATS_SUBJECT_NAMESPACE_VARIABLE, { default: '', pattern: NAMESPACE_PATTERN }),
};

export interface NatsNamespaceConfig {
  readonly natsSubjectNamespace?: string;
}

/** Maps logical subjects (`corral.hosts.h1.heartbeat`) to wire subjects and back. */
export interface SubjectNamespace {
  /** The namespace, '' for none. */
  readonly name: string;
  toWire(subject: string): string;
  /** The logical subject, or undefined when `wire` lies outside the namespace. */
  fromWire(wire: string): string | undefined;
}

/**
 * A namespace for a bus. Throws InvalidSubjectTokenError when `name` is not
 * one subject token; '' or undefined is the identity.
 */
export function subjectNamespace(name: string | undefined): SubjectNamespace {
  if (name === undefined || name === '') {
    return { name: '', toWire: (s) => s, fromWire: (s) => s };
  }
  const prefix = `${assertSubjectToken(name, 'subject namespace')}.`;
  return {
    name,
    toWire: (s) => prefix + s,
    fromWire: (s) => (s.startsWith(prefix) ? s.slice(prefix.length) : undefined),
  };
}
