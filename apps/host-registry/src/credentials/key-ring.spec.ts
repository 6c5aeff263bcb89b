import { generateKeyPairSync } from 'node:crypto';
import { KeyRing, planRotation, type KeyTimes, type RingKey, type RotationPolicy } from './key-ring';

const HOUR = 3600;
const policy: RotationPolicy = { rotationSeconds: 24 * HOUR, publishAheadSeconds: HOUR, tokenTtlSeconds: 900, clockSkewSeconds: 60 };
const t0 = new Date('2026-11-23T00:00:00Z');
const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);

function ringKey(id: string, activatesAt: Date, retiresAt: Date | null = null, withPrivate = true): RingKey {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    id,
    algorithm: 'ES256',
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    publicKey,
    privateKey: withPrivate ? privateKey : undefined,
    hasPrivateKey: withPrivate,
    createdAt: activatesAt,
    activatesAt,
    retiresAt,
  };
}

describe('KeyRing', () => {
  const old = ringKey('old', at(0), at(25 * HOUR + 960));
  const next = ringKey('next', at(25 * HOUR));
  const ring = new KeyRing([next, old]);

  it('signs with the key that activated last, and not with a key only published', () => {
    expect(ring.signingKey(at(24 * HOUR))?.id).toBe('old');
    expect(ring.signingKey(at(25 * HOUR))?.id).toBe('next');
    expect(ring.signingKey(at(-1))).toBeUndefined();
  });

  it('verifies with published, signing and not-yet-retired keys', () => {
    expect(ring.verificationKeys(at(24 * HOUR)).map((k) => k.id)).toEqual(['old', 'next']);
    expect(ring.verificationKeys(at(25 * HOUR + 959)).map((k) => k.id)).toEqual(['old', 'next']);
    expect(ring.verificationKeys(at(25 * HOUR + 960)).map((k) => k.id)).toEqual(['next']);
    expect(ring.verificationKey('old', at(26 * HOUR))).toBeUndefined();
  });

  it('never signs with a key whose private half is gone', () => {
    const wiped = ringKey('wiped', at(0), null, false);
    expect(new KeyRing([wiped]).signingKey(at(10))).toBeUndefined();
  });
});

describe('planRotation', () => {
  const times = (id: string, activatesAt: Date, retiresAt: Date | null = null, hasPrivateKey = true): KeyTimes => ({ id, activatesAt, retiresAt, hasPrivateKey });

  it('creates the first key, signing at once', () => {
    expect(planRotation([], t0, policy)).toEqual({ create: { activatesAt: t0 }, retire: [], wipe: [] });
  });

  it('does nothing while the current key is young', () => {
    expect(planRotation([times('a', at(0))], at(22 * HOUR), policy)).toEqual({ retire: [], wipe: [] });
  });

  it('publishes the next key ahead of its activation and retires the current one a token lifetime after it', () => {
    const plan = planRotation([times('a', at(0))], at(23 * HOUR), policy);
    expect(plan.create).toEqual({ activatesAt: at(24 * HOUR) });
    expect(plan.retire).toEqual([{ id: 'a', retiresAt: at(24 * HOUR + 900 + 60) }]);
  });

  it('still publishes a full period ahead when rotation is overdue (the service was down)', () => {
    const plan = planRotation([times('a', at(0))], at(100 * HOUR), policy);
    expect(plan.create).toEqual({ activatesAt: at(101 * HOUR) });
    expect(plan.retire).toEqual([{ id: 'a', retiresAt: at(101 * HOUR + 960) }]);
  });

  it('adds no second pending key, and wipes keys once retired', () => {
    const keys = [times('a', at(0), at(24 * HOUR + 960)), times('b', at(24 * HOUR))];
    expect(planRotation(keys, at(23.5 * HOUR), policy)).toEqual({ retire: [], wipe: [] });
    expect(planRotation(keys, at(24 * HOUR + 960), policy)).toEqual({ retire: [], wipe: ['a'] });
    expect(planRotation([times('a', at(0), at(1), false)], at(2), policy).wipe).toEqual([]);
  });

  it('starts over with a key signing at once when every key has retired', () => {
    const plan = planRotation([times('a', at(0), at(HOUR))], at(2 * HOUR), policy);
    expect(plan).toEqual({ create: { activatesAt: at(2 * HOUR) }, retire: [], wipe: ['a'] });
  });
});
