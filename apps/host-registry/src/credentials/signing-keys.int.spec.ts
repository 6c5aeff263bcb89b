import { createTestDatabase, describeWithDatabase, type TestDatabase } from '@corral/testing';
import { publicJwks, signHostToken, verifyHostToken } from './host-tokens';
import type { RotationPolicy } from './key-ring';
import { SealedBox } from './sealed-box';
import { HostKeyStore, loadKeyRing, rotateKeys } from './signing-keys';

const HOUR = 3600;
const policy: RotationPolicy = { rotationSeconds: 24 * HOUR, publishAheadSeconds: HOUR, tokenTtlSeconds: 900, clockSkewSeconds: 60 };
const t0 = new Date('2026-11-23T00:00:00Z');
const at = (seconds: number) => new Date(t0.getTime() + seconds * 1000);
const subject = { hostId: 'host-1', familyId: 'family-1' };

describeWithDatabase('signing keys in Postgres', () => {
  let db: TestDatabase;
  const box = new SealedBox('e'.repeat(32));
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db.drop());

  const kids = async (seconds: number) => publicJwks(await loadKeyRing(db.prisma, box), at(seconds)).map((k) => k.kid);

  it('creates one first key however many replicas rotate at once, with its private half sealed', async () => {
    const results = await Promise.all(Array.from({ length: 5 }, () => rotateKeys(db.prisma, box, policy, t0)));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    const rows = await db.prisma.signingKey.findMany();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ algorithm: 'ES256', activatesAt: t0, retiresAt: null });
    expect(rows[0].publicKeyPem).toContain('BEGIN PUBLIC KEY');
    expect(rows[0].privateKeyCiphertext).not.toContain('PRIVATE KEY');
    expect(() => new SealedBox('f'.repeat(32)).open('signing-key', rows[0].privateKeyCiphertext ?? '', `signing-key:${rows[0].id}`)).toThrow();
    expect((await loadKeyRing(db.prisma, box)).signingKey(t0)?.id).toBe(rows[0].id);
  });

  it('rotates: publishes the next key ahead, old tokens verify until they expire, then the old key is retired and wiped', async () => {
    const [oldKey] = await db.prisma.signingKey.findMany();
    expect((await rotateKeys(db.prisma, box, policy, at(22 * HOUR))).created).toBeUndefined();

    const rotation = await rotateKeys(db.prisma, box, policy, at(23 * HOUR));
    expect(rotation.created).toBeDefined();
    const newKid = rotation.created as string;
    expect(await db.prisma.signingKey.findUniqueOrThrow({ where: { id: newKid } })).toMatchObject({ activatesAt: at(24 * HOUR), retiresAt: null });
    expect(await db.prisma.signingKey.findUniqueOrThrow({ where: { id: oldKey.id } })).toMatchObject({ retiresAt: at(24 * HOUR + 900 + 60) });

    // Published before it signs: the JWKS lists both, tokens still carry the old kid.
    expect(await kids(23 * HOUR)).toEqual([oldKey.id, newKid]);
    let ring = await loadKeyRing(db.prisma, box);
    const lastOld = signHostToken(ring, subject, 900, at(24 * HOUR - 1));
    expect(lastOld.keyId).toBe(oldKey.id);

    // Once active, new tokens carry the new kid; the old key's tokens verify until they expire.
    const firstNew = signHostToken(ring, subject, 900, at(24 * HOUR));
    expect(firstNew.keyId).toBe(newKid);
    expect(await kids(24 * HOUR + 600)).toEqual([oldKey.id, newKid]);
    expect(verifyHostToken(ring, lastOld.token, at(24 * HOUR + 898)).keyId).toBe(oldKey.id);
    expect(() => verifyHostToken(ring, lastOld.token, at(24 * HOUR + 899))).toThrow('host token is invalid or expired');

    // After retirement the old key is gone from the JWKS and its private half is destroyed.
    const later = await rotateKeys(db.prisma, box, policy, at(24 * HOUR + 960));
    expect(later.wipe).toEqual([oldKey.id]);
    expect(await kids(24 * HOUR + 960)).toEqual([newKid]);
    expect(await db.prisma.signingKey.findUniqueOrThrow({ where: { id: oldKey.id } })).toMatchObject({ privateKeyCiphertext: null });
    ring = await loadKeyRing(db.prisma, box);
    expect(ring.signingKey(at(24 * HOUR + 960))?.id).toBe(newKid);
  });

  it('gives a replica the new key through its store once rotated, and finds a kid it has not seen by reloading', async () => {
    const replicaA = new HostKeyStore(db.prisma, box, { policy, reloadEveryMs: 60_000, minReloadMs: 0 });
    const replicaB = new HostKeyStore(db.prisma, box, { policy, reloadEveryMs: 60_000, minReloadMs: 0 });
    const before = await replicaB.ring(at(47 * HOUR));
    const result = await replicaA.rotate(at(47 * HOUR));
    expect(result.created).toBeDefined();
    const kid = result.created as string;
    expect(before.has(kid)).toBe(false);
    expect((await replicaB.ringFor(kid)).has(kid)).toBe(true);
    expect((await replicaA.ring(at(48 * HOUR))).signingKey(at(48 * HOUR))?.id).toBe(kid);
  });
});
