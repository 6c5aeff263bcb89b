import type { KeyObject } from 'node:crypto';

// Which key signs host tokens and which keys verify them, as a pure function
// of the key records and the time. A key's life:
//
//   created ──(published: in the JWKS, verifies, does not sign)── activatesAt
//     ──(signs)── the next key's activatesAt
//     ──(verifies what it signed)── retiresAt = that + token TTL + skew ── gone
//
// so verifiers learn a key before any token carries its kid, and a token
// signed by a key that just stopped signing still verifies until it expires.

/** Algorithms host tokens may be signed with. Verification takes the algorithm from the key's own record, never from the token. */
export const HOST_TOKEN_ALGORITHMS = ['ES256'] as const;
export type HostTokenAlgorithm = (typeof HOST_TOKEN_ALGORITHMS)[number];

export function isHostTokenAlgorithm(value: string): value is HostTokenAlgorithm {
  return (HOST_TOKEN_ALGORITHMS as readonly string[]).includes(value);
}

/** What the rotation plan needs to know about a key. */
export interface KeyTimes {
  id: string;
  activatesAt: Date;
  /** Null while the key has no successor. */
  retiresAt: Date | null;
  /** Whether its private half is still stored. */
  hasPrivateKey: boolean;
}

export interface RingKey extends KeyTimes {
  algorithm: HostTokenAlgorithm;
  publicKeyPem: string;
  publicKey: KeyObject;
  /** Present while the key may still sign. */
  privateKey?: KeyObject;
  createdAt: Date;
}

const isLive = (key: KeyTimes, now: Date) => key.retiresAt === null || key.retiresAt.getTime() > now.getTime();
const byActivation = (a: KeyTimes, b: KeyTimes) => a.activatesAt.getTime() - b.activatesAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class KeyRing {
  readonly keys: readonly RingKey[];

  constructor(keys: readonly RingKey[]) {
    this.keys = [...keys].sort(byActivation);
  }

  /** The key that signs at `now`: the live key with a private half that activated last. */
  signingKey(now: Date): RingKey | undefined {
    let signer: RingKey | undefined;
    for (const key of this.keys) {
      if (key.activatesAt.getTime() <= now.getTime() && isLive(key, now) && key.privateKey) signer = key;
    }
    return signer;
  }

  /** Keys that verify at `now`: every live key, including those published ahead of signing. */
  verificationKeys(now: Date): RingKey[] {
    return this.keys.filter((key) => isLive(key, now));
  }

  verificationKey(kid: string, now: Date): RingKey | undefined {
    return this.verificationKeys(now).find((key) => key.id === kid);
  }

  has(kid: string): boolean {
    return this.keys.some((key) => key.id === kid);
  }
}

export interface RotationPolicy {
  /** How long each key signs before its successor takes over. */
  rotationSeconds: number;
  /** How long a key is published before it signs (longer than any verifier caches the JWKS). */
  publishAheadSeconds: number;
  /** The longest lifetime of a token the keys sign. */
  tokenTtlSeconds: number;
  /** Added to the retirement time for clocks that disagree. */
  clockSkewSeconds: number;
}

export interface RotationPlan {
  /** A key to create, and when it starts signing. */
  create?: { activatesAt: Date };
  /** Keys that now have a successor: when they stop verifying. */
  retire: { id: string; retiresAt: Date }[];
  /** Retired keys whose private half can be destroyed. */
  wipe: string[];
}

const addSeconds = (at: Date, seconds: number) => new Date(at.getTime() + seconds * 1000);

/**
 * What `rotateKeys` should do at `now`. Creates the first key (signing at
 * once) when nothing can sign; creates the next key `publishAheadSeconds`
 * before the current one has signed for `rotationSeconds`; gives each key a
 * retirement time once a successor exists (its last signature is at the
 * successor's activation, so every token it signed has expired a token TTL
 * later); and lists retired keys whose private half is still stored.
 */
export function planRotation(keys: readonly KeyTimes[], now: Date, policy: RotationPolicy): RotationPlan {
  const live = keys.filter((key) => isLive(key, now)).sort(byActivation);
  const signers = live.filter((key) => key.activatesAt.getTime() <= now.getTime() && key.hasPrivateKey);
  const current = signers.at(-1);
  const pending = live.filter((key) => key.activatesAt.getTime() > now.getTime());

  let create: RotationPlan['create'];
  if (!current) {
    create = { activatesAt: now };
  } else if (pending.length === 0) {
    const due = addSeconds(current.activatesAt, policy.rotationSeconds);
    if (now.getTime() >= addSeconds(due, -policy.publishAheadSeconds).getTime()) {
      const earliest = addSeconds(now, policy.publishAheadSeconds);
      create = { activatesAt: due.getTime() > earliest.getTime() ? due : earliest };
    }
  }

  const timeline: { id?: string; activatesAt: Date; retiresAt: Date | null }[] = [...live];
  if (create) timeline.push({ activatesAt: create.activatesAt, retiresAt: null });
  timeline.sort((a, b) => a.activatesAt.getTime() - b.activatesAt.getTime());
  const retire: RotationPlan['retire'] = [];
  for (const key of timeline) {
    if (key.id === undefined || key.retiresAt !== null) continue;
    const successor = timeline.find((other) => other !== key && other.activatesAt.getTime() > key.activatesAt.getTime());
    if (successor) retire.push({ id: key.id, retiresAt: addSeconds(successor.activatesAt, policy.tokenTtlSeconds + policy.clockSkewSeconds) });
  }

  const wipe = keys.filter((key) => !isLive(key, now) && key.hasPrivateKey).map((key) => key.id);
  return { create, retire, wipe };
}
