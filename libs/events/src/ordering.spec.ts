import fc from 'fast-check';
import { HeartbeatGate, SequenceGate, type HeartbeatOrder } from './ordering';

/** Every message once, some several times, in an arbitrary order. */
function shuffledWithDuplicates<T>(messages: readonly T[]): fc.Arbitrary<T[]> {
  return fc
    .array(fc.nat({ max: Math.max(0, messages.length - 1) }), { maxLength: messages.length * 2 })
    .chain((extra) => {
      const all = [...messages, ...(messages.length ? extra.map((i) => messages[i]) : [])];
      return fc.shuffledSubarray(all, { minLength: all.length, maxLength: all.length });
    });
}

describe('SequenceGate', () => {
  it('accepts only a seq above the last accepted, per key', () => {
    const gate = new SequenceGate();
    expect(gate.offer('w1', 3)).toEqual({ accepted: true, reason: 'first' });
    expect(gate.offer('w1', 3)).toEqual({ accepted: false, reason: 'duplicate' });
    expect(gate.offer('w1', 2)).toEqual({ accepted: false, reason: 'stale' });
    expect(gate.offer('w1', 5)).toEqual({ accepted: true, reason: 'newer' });
    expect(gate.accept('w2', 1)).toBe(true);
    expect(gate.lastAccepted('w1')).toBe(5);
    expect(gate.size).toBe(2);
  });

  it('refuses invalid sequence numbers instead of letting them poison the key', () => {
    const gate = new SequenceGate();
    for (const bad of [NaN, -1, 1.5, Infinity, Number.MAX_SAFE_INTEGER + 2]) {
      expect(gate.offer('w', bad)).toEqual({ accepted: false, reason: 'invalid' });
    }
    expect(gate.lastAccepted('w')).toBeUndefined();
    expect(gate.accept('w', 0)).toBe(true);
  });

  it('can be seeded from durable state and forget a key', () => {
    const gate = new SequenceGate();
    gate.remember('w', 10);
    gate.remember('w', 4); // never moves back
    expect(gate.accept('w', 10)).toBe(false);
    expect(gate.accept('w', 11)).toBe(true);
    gate.forget('w');
    expect(gate.accept('w', 1)).toBe(true);
    expect(() => gate.remember('w', -1)).toThrow(RangeError);
  });

  it('property: under shuffled, duplicated delivery, accepted seqs strictly increase per key and each key’s maximum is accepted', () => {
    const stream = fc
      .array(fc.tuple(fc.constantFrom('w1', 'w2', 'w3'), fc.integer({ min: 1, max: 5 })), { minLength: 1, maxLength: 30 })
      .map((steps) => {
        // Build each key's true sequence: strictly increasing with gaps.
        const next = new Map<string, number>();
        return steps.map(([key, gap]) => {
          const seq = (next.get(key) ?? 0) + gap;
          next.set(key, seq);
          return { key, seq };
        });
      });
    fc.assert(
      fc.property(
        stream.chain((msgs) => fc.tuple(fc.constant(msgs), shuffledWithDuplicates(msgs))),
        ([msgs, delivery]) => {
          const gate = new SequenceGate();
          const accepted = new Map<string, number[]>();
          for (const m of delivery) {
            if (gate.accept(m.key, m.seq)) accepted.set(m.key, [...(accepted.get(m.key) ?? []), m.seq]);
          }
          for (const key of new Set(msgs.map((m) => m.key))) {
            const got = accepted.get(key) ?? [];
            for (let i = 1; i < got.length; i++) expect(got[i]).toBeGreaterThan(got[i - 1]);
            const max = Math.max(...msgs.filter((m) => m.key === key).map((m) => m.seq));
            expect(got).toContain(max);
            expect(gate.lastAccepted(key)).toBe(max);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('HeartbeatGate', () => {
  const t0 = Date.UTC(2025, 0, 1);
  const hb = (bootId: string, seq: number, atSec: number | undefined, hostId = 'h1'): HeartbeatOrder => ({
    hostId,
    bootId,
    seq,
    sentAt: atSec === undefined ? undefined : new Date(t0 + atSec * 1000),
  });

  it('orders by seq within one boot', () => {
    const gate = new HeartbeatGate();
    expect(gate.offer(hb('A', 1, 1)).reason).toBe('first');
    expect(gate.offer(hb('A', 2, 2)).reason).toBe('newer');
    expect(gate.offer(hb('A', 2, 2)).reason).toBe('duplicate');
    expect(gate.offer(hb('A', 1, 1)).reason).toBe('stale');
    expect(gate.position('h1')).toEqual({ bootId: 'A', seq: 2, sentAt: new Date(t0 + 2000) });
  });

  it('switches to a new boot whose sent_at is later, even with a lower seq', () => {
    const gate = new HeartbeatGate();
    gate.accept(hb('A', 500, 100));
    expect(gate.offer(hb('B', 1, 101))).toEqual({ accepted: true, reason: 'new-boot' });
    expect(gate.position('h1')?.bootId).toBe('B');
    expect(gate.accept(hb('B', 2, 102))).toBe(true);
  });

  it('refuses a late heartbeat of an older boot', () => {
    const gate = new HeartbeatGate();
    gate.accept(hb('A', 5, 100));
    gate.accept(hb('B', 1, 200));
    expect(gate.offer(hb('A', 6, 150)).reason).toBe('stale-boot');
    // Even with a skewed clock, a replaced boot does not come back.
    expect(gate.offer(hb('A', 7, 999)).reason).toBe('stale-boot');
    expect(gate.position('h1')?.bootId).toBe('B');
  });

  it('refuses a new boot that is not later, or carries no sent_at', () => {
    const gate = new HeartbeatGate();
    gate.accept(hb('A', 5, 100));
    expect(gate.offer(hb('B', 1, 100)).reason).toBe('stale-boot');
    expect(gate.offer(hb('B', 1, undefined)).reason).toBe('unordered-boot');
    expect(gate.accept(hb('B', 2, 101))).toBe(true);
  });

  it('refuses malformed heartbeats', () => {
    const gate = new HeartbeatGate();
    expect(gate.offer(hb('', 1, 1)).reason).toBe('invalid');
    expect(gate.offer(hb('A', -1, 1)).reason).toBe('invalid');
    expect(gate.offer({ hostId: 'h1', bootId: 'A', seq: 1, sentAt: new Date(NaN) }).reason).toBe('invalid');
    expect(gate.size).toBe(0);
  });

  it('keeps hosts apart, can be seeded and can forget', () => {
    const gate = new HeartbeatGate();
    gate.remember('h1', { bootId: 'A', seq: 10, sentAt: new Date(t0 + 10_000) });
    expect(gate.accept(hb('A', 10, 10))).toBe(false);
    expect(gate.accept(hb('A', 3, 3, 'h2'))).toBe(true);
    gate.forget('h1');
    expect(gate.accept(hb('A', 1, 1))).toBe(true);
  });

  it('remembers a bounded number of replaced boots', () => {
    const gate = new HeartbeatGate({ retiredBootsPerHost: 2 });
    ['A', 'B', 'C', 'D'].forEach((b, i) => gate.accept(hb(b, 1, i + 1)));
    expect(gate.offer(hb('C', 2, 100)).reason).toBe('stale-boot'); // remembered
    expect(gate.offer(hb('A', 2, 100)).reason).toBe('new-boot'); // forgotten; ordered by time alone
  });

  it('property: under shuffled, duplicated delivery across restarts, accepted heartbeats strictly increase in (boot, seq) and the latest is accepted', () => {
    // A host's true history: boots one after another, seq from 1 in each,
    // sent_at strictly increasing over the whole history.
    const history = fc
      .array(fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 3 })), { minLength: 1, maxLength: 5 })
      .map((boots) => {
        const out: Array<HeartbeatOrder & { index: number }> = [];
        let at = 0;
        boots.forEach(([count, firstSeq], b) => {
          for (let s = 0; s < count; s++) {
            at += 1;
            out.push({ ...hb(`boot-${b}`, firstSeq + s, at), index: out.length });
          }
        });
        return out;
      });
    fc.assert(
      fc.property(
        history.chain((h) => fc.tuple(fc.constant(h), shuffledWithDuplicates(h))),
        ([truth, delivery]) => {
          const gate = new HeartbeatGate();
          const accepted = delivery.filter((m) => gate.accept(m)).map((m) => m.index);
          for (let i = 1; i < accepted.length; i++) expect(accepted[i]).toBeGreaterThan(accepted[i - 1]);
          const last = truth[truth.length - 1];
          expect(accepted).toContain(last.index);
          expect(gate.position('h1')).toEqual({ bootId: last.bootId, seq: last.seq, sentAt: last.sentAt });
        },
      ),
      { numRuns: 500 },
    );
  });
});
