import { FailedPreconditionError } from '@corral/domain';

/** Most workload ids named in the message; the REST body always lists all of them. */
const SHOWN_IN_MESSAGE = 20;

/**
 * A host delete refused because workloads still live there. The only
 * FAILED_PRECONDITION whose client message is not the fixed one: the gateway
 * writes it itself from workload ids the caller may see (never backend
 * text), so REST (409 body) and gRPC (status message) both say what to stop.
 */
export class HostInUseError extends FailedPreconditionError {
  constructor(
    readonly hostId: string,
    /** Live workloads on the host, as the scheduler knows them; empty when only the host's own report still lists some. */
    readonly affectedWorkloadIds: string[],
  ) {
    super(hostInUseMessage(affectedWorkloadIds));
  }
}

export function hostInUseMessage(ids: readonly string[]): string {
  if (ids.length === 0) return 'the host still reports live workloads; stop them or delete with force';
  const shown = ids.slice(0, SHOWN_IN_MESSAGE).join(', ');
  const more = ids.length > SHOWN_IN_MESSAGE ? ` and ${ids.length - SHOWN_IN_MESSAGE} more` : '';
  return `the host still runs ${ids.length} workload(s): ${shown}${more}; stop them or delete with force`;
}
