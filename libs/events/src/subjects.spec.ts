import {
  InvalidSubjectTokenError,
  SubjectPatterns,
  Subjects,
  assertQueueGroup,
  assertSubjectToken,
  auditSubject,
  driftSubject,
  fleetAlarmSubject,
  hostEventsSubject,
  hostHeartbeatSubject,
  workloadStateSubject,
} from './subjects';
import { subjectMatches } from './sublist';

describe('subjects', () => {
  it('builds the documented subjects', () => {
    expect(hostHeartbeatSubject('h-1')).toBe('corral.hosts.h-1.heartbeat');
    expect(hostEventsSubject('h-1')).toBe('corral.hosts.h-1.events');
    expect(workloadStateSubject('w-9')).toBe('corral.workloads.w-9.state');
    expect(driftSubject('w-9')).toBe('corral.drift.w-9');
    expect(fleetAlarmSubject('r-1')).toBe('corral.fleet.r-1.alarm');
    expect(auditSubject('drift')).toBe('corral.audit.drift');
  });

  it('has wildcard patterns matching every key of a family and no other family', () => {
    expect(SubjectPatterns).toEqual({
      hostHeartbeat: 'corral.hosts.*.heartbeat',
      hostEvents: 'corral.hosts.*.events',
      hostNotices: 'corral.hosts.*.notices',
      workloadState: 'corral.workloads.*.state',
      drift: 'corral.drift.*',
      fleetAlarm: 'corral.fleet.*.alarm',
      audit: 'corral.audit.*',
      all: 'corral.>',
    });
    const families = Object.values(Subjects);
    for (const f of families) {
      for (const g of families) {
        expect(subjectMatches(f.pattern, g.subject('k-1'))).toBe(f === g);
      }
      expect(subjectMatches(SubjectPatterns.all, f.subject('k-1'))).toBe(true);
    }
  });

  it('parses the key back out of a subject of its family only', () => {
    expect(Subjects.hostHeartbeat.keyOf('corral.hosts.h-1.heartbeat')).toBe('h-1');
    expect(Subjects.drift.keyOf('corral.drift.w-1')).toBe('w-1');
    expect(Subjects.hostHeartbeat.keyOf('corral.hosts.h-1.events')).toBeUndefined();
    expect(Subjects.hostHeartbeat.keyOf('corral.hosts.a.b.heartbeat')).toBeUndefined();
    expect(Subjects.drift.keyOf('corral.drift.w-1.extra')).toBeUndefined();
    expect(Subjects.workloadState.keyOf('other.workloads.w.state')).toBeUndefined();
  });

  it('accepts ordinary ids', () => {
    for (const id of ['h-1', '0b9c6a2e-5c6f-4d7a-9a55-3f8f0d1f9c11', 'host_01', 'ÄÖ-ü']) {
      expect(assertSubjectToken(id)).toBe(id);
    }
  });

  it.each([
    ['', 'empty'],
    ['a.b', "'.'"],
    ['*', "'*'"],
    ['>', "'>'"],
    ['a b', 'whitespace'],
    ['a\tb', 'whitespace'],
    ['a\nb', 'whitespace'],
    ['a\u00a0b', 'whitespace'],
    ['a\u0000b', 'control'],
  ])('rejects %j with a typed error', (id, why) => {
    let err: unknown;
    try {
      hostHeartbeatSubject(id);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidSubjectTokenError);
    const e = err as InvalidSubjectTokenError;
    expect(e.code).toBe('INVALID_SUBJECT_TOKEN');
    expect(e.token).toBe(id);
    expect(e.role).toBe('hostId');
    expect(e.message).toContain(why);
  });

  it('checks queue group names', () => {
    expect(assertQueueGroup('host-registry.heartbeats')).toBe('host-registry.heartbeats');
    expect(() => assertQueueGroup('')).toThrow(InvalidSubjectTokenError);
    expect(() => assertQueueGroup('a b')).toThrow(InvalidSubjectTokenError);
  });
});
