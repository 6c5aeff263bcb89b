import { PermissionDeniedError } from '@corral/domain';

/** Who is calling, as established from their API key. */
export interface Caller {
  keyId: string;
  admin: boolean;
  /** The key's team; null for platform keys. */
  teamId: string | null;
}

/**
 * The team filter the backends take: '' (all teams) for admin keys, the
 * key's team otherwise. A non-admin key without a team can see nothing: it
 * must never be widened to '' by accident, which would mean "everything".
 */
export function teamScopeOf(caller: Caller): string {
  if (caller.admin) return '';
  if (caller.teamId) return caller.teamId;
  throw new PermissionDeniedError('this API key is neither an admin key nor bound to a team');
}
