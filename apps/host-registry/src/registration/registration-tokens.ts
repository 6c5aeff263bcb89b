import { InvalidArgumentError, NotFoundError, UnauthenticatedError } from '@corral/domain';
import type { Prisma, PrismaClient } from '@corral/db';
import { newBearerSecret, sha256Hex } from './secrets';
import { hostInScope, parseTokenScope, storedTokenScope, type TokenScope } from './token-scope';

export interface IssuedRegistrationToken {
  id: string;
  token: string;
  expiresAt: Date;
}

/** A token as listed: never its secret or hash. */
export interface RegistrationTokenView {
  id: string;
  description: string;
  teamId: string | null;
  createdAt: Date;
  expiresAt: Date;
  usedAt: Date | null;
  usedByHostId: string | null;
  revokedAt: Date | null;
  scope: TokenScope;
}

const MAX_TTL_SECONDS = 30 * 24 * 3600;

const VIEW = {
  id: true,
  description: true,
  teamId: true,
  createdAt: true,
  expiresAt: true,
  usedAt: true,
  usedByHostId: true,
  revokedAt: true,
  namePattern: true,
  requiredLabels: true,
} as const;

type ViewRow = Prisma.RegistrationTokenGetPayload<{ select: typeof VIEW }>;

function toView(row: ViewRow): RegistrationTokenView {
  const { namePattern, requiredLabels, ...rest } = row;
  return { ...rest, scope: storedTokenScope({ namePattern, requiredLabels }) };
}

export async function createRegistrationToken(
  prisma: PrismaClient,
  input: { ttlSeconds: number; teamId?: string; description: string; scope?: { namePattern?: string; labels?: Record<string, string> } },
  now: Date,
): Promise<IssuedRegistrationToken> {
  if (input.ttlSeconds < 60 || input.ttlSeconds > MAX_TTL_SECONDS) {
    throw new InvalidArgumentError(`ttlSeconds must be between 60 and ${MAX_TTL_SECONDS}`, { field: 'ttlSeconds' });
  }
  if (input.description.length > 200) throw new InvalidArgumentError('description must be at most 200 characters', { field: 'description' });
  const scope = parseTokenScope(input.scope);
  const token = newBearerSecret('crt');
  const expiresAt = new Date(now.getTime() + input.ttlSeconds * 1000);
  const row = await prisma.registrationToken.create({
    data: {
      tokenHash: sha256Hex(token),
      teamId: input.teamId || null,
      description: input.description,
      expiresAt,
      namePattern: scope.namePattern,
      requiredLabels: scope.labels,
    },
  });
  return { id: row.id, token, expiresAt };
}

/** A team's tokens, or every token when no team is given (platform admin); newest first. */
export async function listRegistrationTokens(prisma: PrismaClient, teamId?: string): Promise<RegistrationTokenView[]> {
  const rows = await prisma.registrationToken.findMany({
    where: teamId ? { teamId } : {},
    select: VIEW,
    orderBy: [{ createdAt: 'desc' }, { id: 'asc' }],
  });
  return rows.map(toView);
}

/**
 * Revokes a token that is not revoked yet; revoking it again returns it
 * unchanged. With a team, only that team's own tokens: another team's token
 * (or a platform token) is reported as not found.
 */
export async function revokeRegistrationToken(prisma: PrismaClient, input: { id: string; teamId?: string }, now: Date): Promise<RegistrationTokenView> {
  const where = { id: input.id, ...(input.teamId ? { teamId: input.teamId } : {}) };
  await prisma.registrationToken.updateMany({ where: { ...where, revokedAt: null }, data: { revokedAt: now } });
  const row = await prisma.registrationToken.findFirst({ where, select: VIEW });
  if (!row) throw new NotFoundError(`registration token ${input.id} not found`);
  return toView(row);
}

/** One message for every refusal, so a caller cannot probe which tokens exist or what their scope is. */
export const REGISTRATION_REFUSED = 'registration token is invalid, expired, revoked or already used';

/**
 * Marks the token used by `hostId` in the caller's transaction. The scope is
 * checked first (a host outside it leaves the token unused); the guarded
 * update is the single-use check: of concurrent registrations with one token
 * exactly one update matches a row.
 */
export async function consumeRegistrationToken(
  tx: Pick<PrismaClient, 'registrationToken'>,
  presented: string,
  host: { id: string; name: string; labels: Record<string, string> },
  now: Date,
): Promise<{ teamId: string | null }> {
  const tokenHash = sha256Hex(presented);
  const live = { tokenHash, usedAt: null, revokedAt: null, expiresAt: { gt: now } };
  const token = await tx.registrationToken.findFirst({ where: live, select: { teamId: true, namePattern: true, requiredLabels: true } });
  if (!token || !hostInScope(storedTokenScope(token), host)) throw new UnauthenticatedError(REGISTRATION_REFUSED);
  const claimed = await tx.registrationToken.updateMany({ where: live, data: { usedAt: now, usedByHostId: host.id } });
  if (claimed.count !== 1) throw new UnauthenticatedError(REGISTRATION_REFUSED);
  return { teamId: token.teamId };
}
