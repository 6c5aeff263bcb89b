import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { agentV1 } from '@corral/proto';
import type { DriverRegistry } from '../drivers/driver-registry';
import { DEFAULT_PULL_TIMEOUT_MS, OPEN_REGISTRY_POLICY, type PullProgressEvent, type PullSettings } from '../drivers/podman';
import { imageStore } from './image-store';
import { relayProgress } from './progress-relay';

// PullImage: podman pulls from a registry into its store while each line of
// progress it prints is relayed as a message; the result (image id, the
// fully qualified reference, the manifest digest) comes last. The call's
// signal reaches podman: a caller that goes away kills the pull.

export const DEFAULT_PULL_SETTINGS: PullSettings = {
  policy: OPEN_REGISTRY_POLICY,
  authDir: join(tmpdir(), 'corral-image-pulls'),
  timeoutMs: DEFAULT_PULL_TIMEOUT_MS,
};

type Response = agentV1.PullImageResponse;

const toWire = (p: PullProgressEvent): Response => ({
  kind: { $case: 'progress', value: { phase: p.phase, digest: p.digest ?? '', blobs: p.blobs, alreadyPresent: p.alreadyPresent ?? false, ref: p.ref } },
});

export async function* pullImageStream(drivers: DriverRegistry, settings: PullSettings, req: agentV1.PullImageRequest, signal: AbortSignal): AsyncGenerator<Response> {
  const driver = imageStore(drivers, req.driver);
  // Progress arrives from podman's stderr while the pull runs.
  yield* relayProgress<Response>(async (report) => {
    const image = await driver.pullImage(settings, { ref: req.ref, credentials: req.credentials }, { signal, onProgress: (p) => report(toWire(p)) });
    return { kind: { $case: 'result', value: { imageId: image.imageId, ref: image.ref, digest: image.digest } } };
  });
}
