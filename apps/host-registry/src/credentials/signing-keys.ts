import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import type { PrismaClient } from '@corral/db';
import type { Logger } from '@corral/logging';
import { isHostTokenAlgorithm, KeyRing, planRotation, type HostTokenAlgorithm, type RingKey, type RotationPlan, type RotationPolicy } from './key-ring';
import type { SealedBox } from './sealed-box';

// The signing keys in Postgres (table signing_keys): rotation under an
// advisory lock so replicas agree on one plan, and a per-process cache of the
// key ring that every replica reloads often enough to learn a published key
// well before it signs.

// Distinct from the other advisory locks in Corral ("corrl" + 1, Prisma migrate).
const ROTATION_LOCK_KEY = 0x636f72726c02n; // "corrl" + 2: host signing key rotation
const SIGNING_ALGORITHM: HostTokenAlgorithm = 'ES256';

export const DEFAULT_ROTATION: Omit<RotationPolicy, 'tokenTtlSeconds'> = {
  rotationSeconds: 7 * 24 * 3600,
  publishAheadSeconds: 3600,
  clockSkewSeconds: 60,
};

const sealContext = (kid: string) => `signing-key:${kid}`;

/** A fresh P-256 key pair for ES256; the private half sealed for storage. */
function newSigningKey(box: SealedBox): { id: string; algorithm: HostTokenAlgorithm; publicKeyPem: string; privateKeyCiphertext: string } {
  const id = randomUUID();
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const privatePem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  return {
    id,
    algorithm: SIGNING_ALGORITHM,
    publicKeyPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    privateKeyCiphertext: box.seal('signing-key', privatePem, sealContext(id)),
  };
}

export interface RotationResult extends RotationPlan {
  created?: string;
}

/**
 * Applies `planRotation` at `now`: adds the next key ahead of time, sets
 * retirement times, destroys retired private keys. Replicas serialise on a
 * transaction-scoped advisory lock, so concurrent calls yield one new key.
 */
export async function rotateKeys(prisma: PrismaClient, box: SealedBox, policy: RotationPolicy, now: Date): Promise<RotationResult> {
  return prisma.$transaction(async (tx) => {
    await tx.$executeRaw`SELECT pg_advisory_xact_lock(${ROTATION_LOCK_KEY})`;
    const rows = await tx.signingKey.findMany({ select: { id: true, activatesAt: true, retiresAt: true, privateKeyCiphertext: true } });
    const plan = planRotation(
      rows.map((row) => ({ id: row.id, activatesAt: row.activatesAt, retiresAt: row.retiresAt, hasPrivateKey: row.privateKeyCiphertext !== null })),
      now,
      policy,
    );
    let created: string | undefined;
    if (plan.create) {
      const key = newSigningKey(box);
      await tx.signingKey.create({ data: { ...key, createdAt: now, activatesAt: plan.create.activatesAt } });
      created = key.id;
    }
    for (const { id, retiresAt } of plan.retire) await tx.signingKey.update({ where: { id }, data: { retiresAt } });
    if (plan.wipe.length > 0) await tx.signingKey.updateMany({ where: { id: { in: plan.wipe } }, data: { privateKeyCiphertext: null } });
    return { ...plan, created };
  });
}

/** Every key (a few a month), private halves of those not yet retired opened; the ring decides by time. */
export async function loadKeyRing(prisma: PrismaClient, box: SealedBox): Promise<KeyRing> {
  const rows = await prisma.signingKey.findMany();
  const keys: RingKey[] = [];
  for (const row of rows) {
    // A key of an algorithm this build does not know is not used at all.
    if (!isHostTokenAlgorithm(row.algorithm)) continue;
    keys.push({
      id: row.id,
      algorithm: row.algorithm,
      publicKeyPem: row.publicKeyPem,
      publicKey: createPublicKey(row.publicKeyPem),
      privateKey: row.privateKeyCiphertext ? createPrivateKey(box.open('signing-key', row.privateKeyCiphertext, sealContext(row.id))) : undefined,
      hasPrivateKey: row.privateKeyCiphertext !== null,
      createdAt: row.createdAt,
      activatesAt: row.activatesAt,
      retiresAt: row.retiresAt,
    });
  }
  return new KeyRing(keys);
}

/** Where credential code gets the current key ring from. */
export interface SigningKeySource {
  /** A ring with a key that signs at `now`. */
  ring(now: Date): Promise<KeyRing>;
  /** A ring that knows `kid` if the database does (reloads at most once per `minReloadMs` for unknown kids). */
  ringFor(kid: string): Promise<KeyRing>;
}

export interface HostKeyStoreOptions {
  policy: RotationPolicy;
  /** How often the ring is reloaded from the database; well under `publishAheadSeconds`. */
  reloadEveryMs?: number;
  /** Least time between reloads caused by tokens with an unknown kid. */
  minReloadMs?: number;
  logger?: Logger;
}

/**
 * A replica's view of the signing keys: cached, reloaded every
 * `reloadEveryMs`, rotated by `rotate` (called on a timer by the service and
 * whenever the cached ring cannot sign).
 */
export class HostKeyStore implements SigningKeySource {
  private cached?: { ring: KeyRing; loadedAt: number };
  private loading?: Promise<KeyRing>;
  private rotating?: Promise<RotationResult>;
  private timer?: NodeJS.Timeout;
  private readonly reloadEveryMs: number;
  private readonly minReloadMs: number;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly box: SealedBox,
    private readonly options: HostKeyStoreOptions,
  ) {
    this.reloadEveryMs = options.reloadEveryMs ?? 60_000;
    this.minReloadMs = options.minReloadMs ?? 5_000;
  }

  async ring(now: Date): Promise<KeyRing> {
    const cached = this.cached;
    if (cached && Date.now() - cached.loadedAt < this.reloadEveryMs && cached.ring.signingKey(now)) return cached.ring;
    const ring = await this.reload();
    if (ring.signingKey(now)) return ring;
    await this.rotate(now);
    return this.cached?.ring ?? this.reload();
  }

  async ringFor(kid: string): Promise<KeyRing> {
    const cached = this.cached;
    if (cached && (cached.ring.has(kid) || Date.now() - cached.loadedAt < this.minReloadMs) && Date.now() - cached.loadedAt < this.reloadEveryMs) return cached.ring;
    return this.reload();
  }

  /** Rotates if due, then reloads. Concurrent calls share one rotation. */
  rotate(now: Date): Promise<RotationResult> {
    this.rotating ??= this.rotateOnce(now).finally(() => {
      this.rotating = undefined;
    });
    return this.rotating;
  }

  private async rotateOnce(now: Date): Promise<RotationResult> {
    const result = await rotateKeys(this.prisma, this.box, this.options.policy, now);
    if (result.created || result.retire.length > 0 || result.wipe.length > 0) {
      this.options.logger?.info('host signing keys rotated', {
        created: result.created,
        activatesAt: result.create?.activatesAt,
        retiring: result.retire.map((r) => r.id),
        wiped: result.wipe,
      });
    }
    // A load that started before the rotation committed may miss the new key.
    await this.loading?.catch(() => undefined);
    this.cached = undefined;
    await this.reload();
    return result;
  }

  /** Rotates now and then every `intervalMs`; failures are logged and retried on the next tick. */
  start(intervalMs: number): Promise<RotationResult> {
    this.timer = setInterval(() => {
      this.rotate(new Date()).catch((err: unknown) => this.options.logger?.error('host signing key rotation failed', { err }));
    }, intervalMs);
    this.timer.unref();
    return this.rotate(new Date());
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private reload(): Promise<KeyRing> {
    this.loading ??= loadKeyRing(this.prisma, this.box)
      .then((ring) => {
        this.cached = { ring, loadedAt: Date.now() };
        return ring;
      })
      .finally(() => {
        this.loading = undefined;
      });
    return this.loading;
  }
}
