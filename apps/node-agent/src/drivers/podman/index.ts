export { PodmanDriver, PODMAN_DRIVER_NAME, DEFAULT_NOFILE, DEFAULT_NPROC, exitResultOf } from './podman-driver';
export type { ImportedImage, ImportProgress, PodmanDriverOptions, PodmanTaskStatus } from './podman-driver';
export { hasExec, hasPause } from '../driver';
export type { ExecCapability, ExecOptions, ExecOutcome, PauseCapability } from '../driver';
export { CONTAINER_NAME_PREFIX, WORKLOAD_ID_LABEL, containerName } from './commands';
export type { ContainerInspection, ContainerSummary, Ulimit } from './commands';
export { IMAGE_ARCHIVE_FORMATS, validateImageFormat, validateImageRef } from './commands';
export type { ImageArchiveFormat, ImageInfo } from './commands';
