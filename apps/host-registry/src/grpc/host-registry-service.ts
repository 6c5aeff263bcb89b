import type { PrismaClient } from '@corral/db';
import { UnavailableError, type HostStatus } from '@corral/domain';
import type { EventBus } from '@corral/events';
import { implementUnary } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { hostRegistryV1 } from '@corral/proto';
import type { HostCertificateIssuer } from '../credentials/host-certificates';
import { hostTokenJwks, refreshHostCredentials, type CredentialPolicy } from '../credentials/host-credentials';
import { HOST_TOKEN_AUDIENCE, HOST_TOKEN_ISSUER } from '../credentials/host-tokens';
import { publishHostStatus } from '../hosts/host-events';
import { getHost, hostToProto, listHosts, registerHost } from '../hosts/host-inventory';
import { deleteHost, drainHost, undrainHost, type StatusChange } from '../hosts/host-lifecycle';
import { createRegistrationToken, listRegistrationTokens, revokeRegistrationToken, type RegistrationTokenView } from '../registration/registration-tokens';

export interface HostRegistryDeps {
  prisma: PrismaClient;
  logger: Logger;
  credentials: CredentialPolicy;
  registrationTokenDefaultTtlSeconds: number;
  /** Issues hosts' mutual-TLS certificates; without it none are (agents serve plaintext). */
  certificates?: HostCertificateIssuer;
  /** Where host status changes are announced; none in tests that do not care. */
  bus?: Pick<EventBus, 'publish'>;
  /** GetFleetHealth's answer; Unavailable when not wired. */
  fleetHealth?: () => Promise<hostRegistryV1.GetFleetHealthResponse>;
  now?: () => Date;
}

function tokenToProto(token: RegistrationTokenView): hostRegistryV1.RegistrationToken {
  return {
    id: token.id,
    description: token.description,
    teamId: token.teamId ?? '',
    createdAt: token.createdAt,
    expiresAt: token.expiresAt,
    usedAt: token.usedAt ?? undefined,
    usedByHostId: token.usedByHostId ?? '',
    revokedAt: token.revokedAt ?? undefined,
    scope: { namePattern: token.scope.namePattern ?? '', labels: token.scope.labels },
  };
}

/** The gRPC adapter: translation only, the rules live in hosts/, registration/ and credentials/. */
export function hostRegistryService(deps: HostRegistryDeps) {
  const now = deps.now ?? (() => new Date());
  const credentials: CredentialPolicy = { logger: deps.logger, ...deps.credentials };
  const announce = (change: StatusChange, reason: string) => {
    if (!change.changed || !deps.bus) return;
    publishHostStatus(deps.bus, deps.logger, { hostId: change.host.id, status: change.host.status as HostStatus, previous: change.previous, reason, at: now() });
  };
  return implementUnary(
    hostRegistryV1.HostRegistryServiceService,
    {
      async createRegistrationToken(req) {
        const issued = await createRegistrationToken(
          deps.prisma,
          {
            ttlSeconds: req.ttlSeconds || deps.registrationTokenDefaultTtlSeconds,
            teamId: req.teamId || undefined,
            description: req.description,
            scope: req.scope ? { namePattern: req.scope.namePattern, labels: req.scope.labels } : undefined,
          },
          now(),
        );
        return { id: issued.id, token: issued.token, expiresAt: issued.expiresAt };
      },
      async listRegistrationTokens(req) {
        return { tokens: (await listRegistrationTokens(deps.prisma, req.teamId || undefined)).map(tokenToProto) };
      },
      async revokeRegistrationToken(req) {
        const token = await revokeRegistrationToken(deps.prisma, { id: req.id, teamId: req.teamId || undefined }, now());
        deps.logger.info('registration token revoked', { id: token.id, teamId: token.teamId ?? undefined });
        return { token: tokenToProto(token) };
      },
      async registerHost(req) {
        // A bad CSR is refused before the single-use token is spent.
        const issuer = req.csr ? deps.certificates : undefined;
        if (issuer) await issuer.check(req.csr ?? '');
        const { hostId, credentials: pair } = await registerHost(
          deps.prisma,
          {
            registrationToken: req.registrationToken,
            name: req.name,
            agentAddress: req.agentAddress,
            capacity: req.capacity ?? { cpuMillis: 0, memoryMb: 0, diskMb: 0 },
            drivers: req.drivers,
            labels: req.labels,
          },
          credentials,
          now(),
        );
        const certificate = issuer ? await issuer.issue(hostId, req.agentAddress, req.csr ?? '', now()) : undefined;
        deps.logger.info('host registered', { hostId, name: req.name, agentAddress: req.agentAddress, certificate: certificate !== undefined });
        return {
          hostId,
          hostToken: pair.hostToken,
          hostTokenExpiresAt: pair.hostTokenExpiresAt,
          refreshToken: pair.refreshToken,
          refreshTokenExpiresAt: pair.refreshTokenExpiresAt,
          certificate,
        };
      },
      async refreshHostCredentials(req) {
        const issuer = req.csr ? deps.certificates : undefined;
        if (issuer) await issuer.check(req.csr ?? '');
        const pair = await refreshHostCredentials(deps.prisma, req.refreshToken, credentials, now());
        // Named for the address the host last reported (heartbeats keep it current).
        const certificate = issuer ? await issuer.issue(pair.hostId, (await getHost(deps.prisma, pair.hostId)).agentAddress, req.csr ?? '', now()) : undefined;
        return {
          hostId: pair.hostId,
          hostToken: pair.hostToken,
          hostTokenExpiresAt: pair.hostTokenExpiresAt,
          refreshToken: pair.refreshToken,
          refreshTokenExpiresAt: pair.refreshTokenExpiresAt,
          certificate,
        };
      },
      async getJwks() {
        const keys = await hostTokenJwks(deps.prisma, credentials, now());
        return { keys, issuer: HOST_TOKEN_ISSUER, audience: HOST_TOKEN_AUDIENCE };
      },
      async listHosts(req) {
        return { hosts: (await listHosts(deps.prisma, req.teamId || undefined)).map(hostToProto) };
      },
      async getHost(req) {
        return { host: hostToProto(await getHost(deps.prisma, req.id)) };
      },
      async drainHost(req) {
        const change = await drainHost(deps.prisma, req.id, req.teamId || undefined);
        if (change.changed) deps.logger.info('host draining', { hostId: req.id, from: change.previous });
        announce(change, 'drained by an operator');
        return { host: hostToProto(change.host) };
      },
      async undrainHost(req) {
        const change = await undrainHost(deps.prisma, req.id, req.teamId || undefined);
        if (change.changed) deps.logger.info('host undrained', { hostId: req.id });
        announce(change, 'undrained by an operator');
        return { host: hostToProto(change.host) };
      },
      async deleteHost(req) {
        const out = await deleteHost(deps.prisma, req.id, { teamId: req.teamId || undefined, force: req.force }, now());
        if (out.deletedNow) {
          deps.logger.warn('host deleted', { hostId: req.id, force: req.force, affectedWorkloads: out.affected.length });
          if (deps.bus) {
            publishHostStatus(deps.bus, deps.logger, { hostId: req.id, status: 'down', previous: out.previous, reason: 'deleted', deleted: true, agentAddress: out.host.agentAddress, at: now() });
          }
        }
        return { id: req.id, affectedWorkloadIds: out.affected, deletedNow: out.deletedNow };
      },
      async getFleetHealth() {
        if (!deps.fleetHealth) throw new UnavailableError('fleet health is not available on this server');
        return deps.fleetHealth();
      },
    },
    deps.logger,
  );
}
