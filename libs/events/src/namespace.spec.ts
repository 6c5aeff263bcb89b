import { ConfigError, loadConfig } from '@corral/config';
import { natsNamespaceConfigSchema, subjectNamespace } from './namespace';
import { InvalidSubjectTokenError } from './subjects';

describe('subject namespace', () => {
  it('is the identity when empty', () => {
    const none = subjectNamespace('');
    expect(none.toWire('corral.hosts.h1.heartbeat')).toBe('corral.hosts.h1.heartbeat');
    expect(none.fromWire('corral.hosts.h1.heartbeat')).toBe('corral.hosts.h1.heartbeat');
    expect(subjectNamespace(undefined).name).toBe('');
  });

  it('prefixes subjects and wildcard patterns, and strips only its own prefix', () => {
    const ns = subjectNamespace('ci-42');
    expect(ns.toWire('corral.hosts.*.heartbeat')).toBe('ci-42.corral.hosts.*.heartbeat');
    expect(ns.toWire('corral.>')).toBe('ci-42.corral.>');
    expect(ns.fromWire('ci-42.corral.hosts.h1.heartbeat')).toBe('corral.hosts.h1.heartbeat');
    expect(ns.fromWire('ci-4.corral.hosts.h1.heartbeat')).toBeUndefined();
    expect(ns.fromWire('corral.hosts.h1.heartbeat')).toBeUndefined();
  });

  it('must be one subject token', () => {
    for (const bad of ['a.b', '*', '>', 'a b', 'tab\t']) expect(() => subjectNamespace(bad)).toThrow(InvalidSubjectTokenError);
  });

  it('is read from NATS_SUBJECT_NAMESPACE, empty by default, and validated', () => {
    expect(loadConfig(natsNamespaceConfigSchema, {}).natsSubjectNamespace).toBe('');
    expect(loadConfig(natsNamespaceConfigSchema, { NATS_SUBJECT_NAMESPACE: 'staging' }).natsSubjectNamespace).toBe('staging');
    for (const bad of ['a.b', 'corral.*', 'x>']) {
      expect(() => loadConfig(natsNamespaceConfigSchema, { NATS_SUBJECT_NAMESPACE: bad })).toThrow(ConfigError);
    }
  });
});
