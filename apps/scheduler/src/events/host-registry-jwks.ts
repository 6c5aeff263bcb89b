import { JwksHostTokenVerifier, type AuthenticateHostToken, type PublishedJwks } from '@corral/auth';
import { createClient, type ChannelCredentials } from '@corral/grpc';
import { hostRegistryV1 } from '@corral/proto';

/** host-registry's GetJwks, as the verifier of host tokens needs it. */
export function hostRegistryJwks(address: string, options: { credentials?: ChannelCredentials; deadlineMs?: number } = {}): {
  fetch: () => Promise<PublishedJwks>;
  close: () => void;
} {
  const client = createClient(hostRegistryV1.HostRegistryServiceClient, address, { deadlineMs: options.deadlineMs ?? 5000, credentials: options.credentials });
  return {
    async fetch() {
      const res = await client.getJwks({});
      return {
        issuer: res.issuer,
        audience: res.audience,
        keys: res.keys.map((key) => ({ kid: key.kid, kty: key.kty, alg: key.alg, crv: key.crv, x: key.x, y: key.y, retiresAt: key.retiresAt })),
      };
    },
    close: () => client.close(),
  };
}

/** Checks host tokens against the keys `fetchJwks` publishes (kept, refetched for an unknown kid). */
export function hostTokenVerifier(fetchJwks: () => Promise<PublishedJwks>): AuthenticateHostToken {
  const verifier = new JwksHostTokenVerifier({ fetchJwks });
  return (token, now) => verifier.verify(token, now);
}
