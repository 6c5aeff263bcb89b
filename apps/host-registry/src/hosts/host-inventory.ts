import { randomUUID } from 'node:crypto';
import { InvalidArgumentError, NotFoundError, hostStatusToProto, type HostStatus } from '@corral/domain';
import type { PrismaClient, Host as HostRow } from '@corral/db';
import { hostRegistryV1, type DriverFingerprint, type Resources } from '@corral/proto';
import { issueFirstCredentials, type CredentialPair, type CredentialPolicy } from '../credentials/host-credentials';
import { consumeRegistrationToken } from '../registration/registration-tokens';
import { sha256Hex } from '../registration/secrets';

export type { CredentialPolicy } from '../credentials/host-credentials';

export interface RegisterHostInput {
  registrationToken: string;
  name: string;
  agentAddress: string;
  capacity: Resources;
  drivers: DriverFingerprint[];
  labels: Record<string, string>;
}

const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;
const ADDRESS = /^[A-Za-z0-9.\-_[\]:]+:\d{1,5}$/;

function validateRegistration(input: RegisterHostInput) {
  if (!input.registrationToken) throw new InvalidArgumentError('registrationToken is required', { field: 'registrationToken' });
  if (!HOST_NAME.test(input.name)) throw new InvalidArgumentError('name must be a host name', { field: 'name' });
  if (!ADDRESS.test(input.agentAddress)) throw new InvalidArgumentError('agentAddress must be host:port', { field: 'agentAddress' });
  if (Object.keys(input.labels).length > 64) throw new InvalidArgumentError('at most 64 labels', { field: 'labels' });
}

export interface RegisteredHost {
  hostId: string;
  /** The host token (JWT) and when it expires. */
  credential: { token: string; expiresAt: Date };
  /** The whole first pair, with the refresh token. */
  credentials: CredentialPair;
}

/**
 * Registers a host with a single-use token. The token is claimed, the host
 * created and its first refresh token stored in one transaction: a failed
 * insert (or a host outside the token's scope) leaves the token unused, and
 * a token used by a concurrent call creates no host.
 */
export async function registerHost(
  prisma: PrismaClient,
  input: RegisterHostInput,
  policy: CredentialPolicy,
  now: Date,
): Promise<RegisteredHost> {
  validateRegistration(input);
  const hostId = randomUUID();
  const { pair, refreshTokenRow } = await issueFirstCredentials(prisma, policy, hostId, now);
  await prisma.$transaction(async (tx) => {
    const { teamId } = await consumeRegistrationToken(tx, input.registrationToken, { id: hostId, name: input.name, labels: input.labels }, now);
    await tx.host.create({
      data: {
        id: hostId,
        name: input.name,
        status: 'online',
        agentAddress: input.agentAddress,
        teamId,
        labels: input.labels,
        capacity: { ...input.capacity },
        usage: {},
        drivers: input.drivers.map((d) => ({ ...d })),
        credentialHash: sha256Hex(pair.hostToken),
        lastHeartbeatAt: now,
      },
    });
    await tx.refreshToken.create({ data: refreshTokenRow });
  });
  return { hostId, credential: { token: pair.hostToken, expiresAt: pair.hostTokenExpiresAt }, credentials: pair };
}

/** Platform hosts plus the team's own hosts; every host for an admin (no team). */
export async function listHosts(prisma: PrismaClient, teamId?: string): Promise<HostRow[]> {
  return prisma.host.findMany({
    where: { deletedAt: null, ...(teamId ? { OR: [{ teamId: null }, { teamId }] } : {}) },
    orderBy: { createdAt: 'asc' },
  });
}

export async function getHost(prisma: PrismaClient, id: string, teamId?: string): Promise<HostRow> {
  const host = await prisma.host.findFirst({ where: { id, deletedAt: null } });
  // Another team's host is reported as missing, not forbidden: its existence is not theirs to know.
  if (!host || (teamId && host.teamId !== null && host.teamId !== teamId)) throw new NotFoundError(`host ${id} not found`);
  return host;
}

const asResources = (value: unknown): Resources => {
  const v = (value ?? {}) as Partial<Resources>;
  return { cpuMillis: Number(v.cpuMillis ?? 0), memoryMb: Number(v.memoryMb ?? 0), diskMb: Number(v.diskMb ?? 0) };
};

export function hostToProto(host: HostRow): hostRegistryV1.Host {
  return {
    id: host.id,
    name: host.name,
    status: hostStatusToProto(host.status as HostStatus),
    agentAddress: host.agentAddress,
    capacity: asResources(host.capacity),
    usage: asResources(host.usage),
    drivers: Array.isArray(host.drivers) ? (host.drivers as unknown as DriverFingerprint[]) : [],
    labels: (host.labels ?? {}) as Record<string, string>,
    teamId: host.teamId ?? '',
    lastHeartbeatAt: host.lastHeartbeatAt ?? undefined,
    createdAt: host.createdAt,
  };
}
