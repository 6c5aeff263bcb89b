import { InvalidArgumentError, validateWorkloadSpec, type WorkloadRouteInput, type WorkloadVmInput, type WorkloadResources } from '@corral/domain';
import type { WorkloadSpec } from './workload-record';

// Workload ids become file and directory names and NATS subject tokens, so
// only a conservative alphabet is accepted (UUIDs and slugs fit).
const WORKLOAD_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const MAX_LABELS = 64;
const MAX_LABEL_LENGTH = 256;

export interface WorkloadSpecInput {
  workloadId: string;
  name: string;
  driver: string;
  command: string[];
  env: Record<string, string>;
  labels: Record<string, string>;
  image?: string;
  resources?: WorkloadResources;
  /** Ports the workload listens on; each gets a host port. */
  routes?: WorkloadRouteInput[];
  vm?: WorkloadVmInput;
}

/**
 * The shared domain rules (validateWorkloadSpec) plus what the agent needs
 * on top. Error fields are prefixed with `spec.` as in StartWorkloadRequest.
 */
export function validateSpec(input: WorkloadSpecInput): WorkloadSpec {
  if (!WORKLOAD_ID.test(input.workloadId ?? '')) {
    throw new InvalidArgumentError('workload id must be 1-128 letters, digits, dashes or underscores, starting with a letter or digit', {
      field: 'spec.workloadId',
    });
  }
  let valid;
  try {
    valid = validateWorkloadSpec({
      name: input.name,
      driver: input.driver,
      command: input.command,
      env: input.env,
      image: input.image,
      resources: input.resources,
      routes: input.routes,
      vm: input.vm,
    });
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new InvalidArgumentError(err.message, { field: err.field ? `spec.${err.field}` : 'spec', cause: err });
    throw err;
  }
  const labels = Object.entries(input.labels ?? {});
  if (labels.length > MAX_LABELS) throw new InvalidArgumentError(`at most ${MAX_LABELS} labels`, { field: 'spec.labels' });
  for (const [key, value] of labels) {
    if (key.length === 0 || key.length > MAX_LABEL_LENGTH || value.length > MAX_LABEL_LENGTH) {
      throw new InvalidArgumentError(`label names and values must be under ${MAX_LABEL_LENGTH} characters`, { field: `spec.labels.${key}` });
    }
  }
  return {
    workloadId: input.workloadId,
    name: valid.name,
    driver: valid.driver,
    command: valid.command,
    env: valid.env,
    labels: { ...input.labels },
    routes: valid.routes,
    ...(valid.image !== undefined ? { image: valid.image } : {}),
    ...(valid.resources !== undefined ? { resources: valid.resources } : {}),
    ...(valid.vm !== undefined ? { vm: valid.vm } : {}),
  };
}
