import { FailedPreconditionError, InvalidArgumentError, NotFoundError, PermissionDeniedError } from '@corral/domain';
import { implementBidiStream, implementServerStream, implementUnary, openBidiStream } from '@corral/grpc';
import type { Logger } from '@corral/logging';
import { schedulerV1, type agentV1 } from '@corral/proto';
import type { AgentClient, AgentPool } from '../agents/agent-pool';
import type { HostDirectory } from '../hosts/host-directory';

// Images on a host: access is checked here (admin: any host; a team: only
// its own BYOC hosts, the platform's are the operators'), then the call is
// proxied to the host's agent message by message, carrying the downstream
// call's signal so a caller that goes away cancels the agent's import.

export interface HostImagesDeps {
  hosts: HostDirectory;
  agents: AgentPool;
}

/** The agent of host `hostId` if the caller may manage its images. */
export async function imageAgentOf(deps: HostImagesDeps, hostId: string, teamId: string | null): Promise<AgentClient> {
  if (!hostId) throw new InvalidArgumentError('hostId is required', { field: 'hostId' });
  const host = await deps.hosts.get(hostId);
  if (teamId !== null && host.teamId !== teamId) {
    // Same rules as the fleet calls: another team's host does not exist for this caller.
    if (host.teamId !== null) throw new NotFoundError(`no host ${hostId}`, { field: 'hostId' });
    throw new PermissionDeniedError("only an admin may manage the platform's hosts' images");
  }
  if (host.status !== 'online' && host.status !== 'draining') throw new FailedPreconditionError(`host ${hostId} is ${host.status}`);
  return deps.agents.get(host);
}

const team = (teamId: string) => teamId || null;

export function hostImageHandlers(deps: HostImagesDeps, logger: Logger) {
  const definition = schedulerV1.SchedulerServiceService;
  return {
    ...implementBidiStream(
      definition,
      {
        async *importHostImage(requests, ctx) {
          const iterator = requests[Symbol.asyncIterator]();
          const first = await iterator.next();
          if (first.done || first.value.kind?.$case !== 'header') throw new InvalidArgumentError('the first message must be the header', { field: 'header' });
          const header = first.value.kind.value;
          if (!header.image) throw new InvalidArgumentError('image is required', { field: 'image' });
          const agent = await imageAgentOf(deps, header.hostId, team(header.teamId));
          const upstream = openBidiStream<agentV1.ImportImageRequest, agentV1.ImportImageResponse>((md, o) => agent.raw.importImage(md, o), { signal: ctx.signal });
          await upstream.write({ kind: { $case: 'header', value: header.image } });
          // The upload is pumped beside the answers: the agent reports progress while it receives.
          void (async () => {
            try {
              for (;;) {
                const next = await iterator.next();
                // Ended without eof: cut short; cancelling the agent's call imports nothing.
                if (next.done) throw new InvalidArgumentError('the upload ended before eof', { field: 'eof' });
                const kind = next.value.kind;
                if (kind?.$case === 'eof') {
                  await upstream.write({ kind: { $case: 'eof', value: true } });
                  break;
                }
                if (kind?.$case === 'chunk') await upstream.write({ kind: { $case: 'chunk', value: kind.value } });
              }
              upstream.end();
            } catch {
              upstream.cancel();
            }
          })();
          for await (const message of upstream.responses) {
            if (message.kind) yield { kind: message.kind };
          }
        },
      },
      logger,
    ),
    ...implementServerStream(
      definition,
      {
        async *pullHostImage(req, ctx) {
          if (!req.image) throw new InvalidArgumentError('image is required', { field: 'image' });
          const agent = await imageAgentOf(deps, req.hostId, team(req.teamId));
          // The downstream call's signal: a caller that goes away cancels the agent's call, which kills podman.
          for await (const message of agent.stream('pullImage', { ...req.image, driver: req.image.driver || 'podman' }, { signal: ctx.signal })) {
            if (message.kind) yield { kind: message.kind };
          }
        },
      },
      logger,
    ),
    ...implementUnary(
      definition,
      {
        async listHostImages(req) {
          const agent = await imageAgentOf(deps, req.hostId, team(req.teamId));
          const res = await agent.listImages({ driver: req.driver || 'podman' });
          return { images: res.images };
        },
      },
      logger,
    ),
  };
}
