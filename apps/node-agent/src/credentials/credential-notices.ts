import { isCorralError } from '@corral/domain';
import { Topics, type EventBus, type EventSubscription } from '@corral/events';
import type { Logger } from '@corral/logging';
import type { CredentialRefresher } from './credential-refresher';

// The control plane tells an agent when it drops one of its messages for
// its host token (host-registry a heartbeat, the scheduler a state event):
// a CredentialRefused notice on corral.hosts.<hostId>.notices. The agent
// refreshes at once rather than stay silent until its next scheduled
// refresh. Notices carry no secret and anyone on the bus could send one, so
// acting on one only ever costs a refresh, and the refresher limits how
// often (minOnDemandIntervalMs).

/** Subscribes to this host's notices and refreshes on each CredentialRefused. */
export function refreshOnCredentialNotices(options: {
  bus: Pick<EventBus, 'subscribe'>;
  hostId: string;
  refresher: Pick<CredentialRefresher, 'refreshNow'>;
  logger: Logger;
}): EventSubscription {
  return options.bus.subscribe(
    Topics.credentialRefused,
    async (notice) => {
      await options.refresher.refreshNow(`${notice.refusedBy || 'the control plane'} refused a message (${notice.messageKind})`);
    },
    { key: options.hostId },
  );
}

/** The answers of a call carrying the host token that mean "your token is no good". */
const TOKEN_REFUSED = new Set(['UNAUTHENTICATED', 'PERMISSION_DENIED']);

/**
 * Runs a call to the control plane that carries the host token; when it is
 * refused as unauthenticated or forbidden, refreshes once and tries again
 * (with the new token: `call` must read the current one each time).
 */
export async function withFreshCredentials<T>(refresher: Pick<CredentialRefresher, 'refreshNow'>, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (!(isCorralError(err) && TOKEN_REFUSED.has(err.code))) throw err;
    await refresher.refreshNow(`a call was refused (${err.code})`);
    return call();
  }
}
