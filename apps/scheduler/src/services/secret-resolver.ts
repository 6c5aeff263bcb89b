import { FailedPreconditionError } from '@corral/domain';
import { SERVICE_STATE_FIELD } from './service-errors';

// A component's `secrets` are names of tenant secrets, injected at deploy
// as environment variables of the same name. secrets-broker owns them and
// has no API yet, so the resolver that ships fails clearly for components
// that reference any, before anything is recorded or started.

export interface SecretResolver {
  /** Values by name, for the component's env. Never log what comes back. */
  resolve(request: { teamId: string | null; service: string; component: string; names: string[] }): Promise<Record<string, string>>;
}

export const unavailableSecretResolver: SecretResolver = {
  async resolve({ component, names }) {
    if (names.length === 0) return {};
    throw new FailedPreconditionError(`secrets-broker not available: component ${component} references secrets (${names.join(', ')}), which cannot be resolved yet`, { field: SERVICE_STATE_FIELD });
  },
};
