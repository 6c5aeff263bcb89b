import fc from 'fast-check';
import { Sublist, isValidPublishSubject, isValidSubscribeSubject, subjectMatches } from './sublist';

describe('subject syntax', () => {
  it.each(['a', 'a.b.c', 'corral.hosts.h-1.heartbeat', 'a*b.c>', '_INBOX.x.y'])('accepts publish subject %s', (s) =>
    expect(isValidPublishSubject(s)).toBe(true),
  );
  it.each(['', 'a..b', '.a', 'a.', 'a.*', 'a.>', '*', 'a b', 'a\tb', 'a\r\n'])('rejects publish subject %j', (s) =>
    expect(isValidPublishSubject(s)).toBe(false),
  );
  it.each(['a', 'a.*', '*.b', 'a.>', '>', '*.*.>'])('accepts subscribe subject %s', (s) =>
    expect(isValidSubscribeSubject(s)).toBe(true),
  );
  it.each(['', 'a..b', 'a.>.b', '>.a', 'a b', 'a.'])('rejects subscribe subject %j', (s) =>
    expect(isValidSubscribeSubject(s)).toBe(false),
  );
});

describe('subjectMatches', () => {
  it.each([
    ['a.b', 'a.b', true],
    ['a.*', 'a.b', true],
    ['a.*', 'a.b.c', false],
    ['a.*', 'a', false],
    ['a.>', 'a.b.c', true],
    ['a.>', 'a', false],
    ['>', 'a', true],
    ['*.b.*', 'x.b.y', true],
    ['a*.b', 'ax.b', false],
    ['a*.b', 'a*.b', true],
  ])('%s matches %s: %s', (p, s, want) => expect(subjectMatches(p, s)).toBe(want));
});

describe('Sublist', () => {
  const tok = fc.constantFrom('a', 'b', 'c');
  const pattern = fc
    .tuple(fc.array(fc.oneof(tok, fc.constant('*')), { minLength: 1, maxLength: 4 }), fc.boolean())
    .map(([ts, tail]) => [...ts, ...(tail ? ['>'] : [])].join('.'));
  const subject = fc.array(tok, { minLength: 1, maxLength: 5 }).map((ts) => ts.join('.'));

  it('matches exactly what subjectMatches says, after inserts and removes', () => {
    fc.assert(
      fc.property(fc.array(pattern, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 10 }), fc.array(subject, { maxLength: 10 }), (patterns, removals, subjects) => {
        const list = new Sublist<number>();
        const live = new Map<number, string>();
        patterns.forEach((p, i) => {
          list.insert(p, i);
          live.set(i, p);
        });
        for (const r of removals) {
          if (patterns.length === 0) break;
          const i = r % patterns.length;
          expect(list.remove(patterns[i], i)).toBe(live.delete(i));
        }
        expect(list.size).toBe(live.size);
        for (const s of subjects) {
          const want = [...live].filter(([, p]) => subjectMatches(p, s)).map(([i]) => i).sort((x, y) => x - y);
          expect(list.match(s).sort((x, y) => x - y)).toEqual(want);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('does not add the same item twice under one pattern', () => {
    const list = new Sublist<string>();
    list.insert('a.*', 'x');
    list.insert('a.*', 'x');
    expect(list.size).toBe(1);
    expect(list.match('a.b')).toEqual(['x']);
    expect(list.remove('a.>', 'x')).toBe(false);
  });
});
