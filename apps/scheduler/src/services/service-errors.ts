/**
 * The field of a FailedPrecondition about a service deploy (a rollout in
 * progress, a secret that cannot be resolved): the gateway passes such a
 * message to the caller, so it holds names and ids only.
 */
export const SERVICE_STATE_FIELD = 'service';
