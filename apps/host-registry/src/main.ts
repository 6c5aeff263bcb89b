import { describeConfig } from '@corral/config';
import { runUntilSignal } from '@corral/grpc';
import { createLogger } from '@corral/logging';
import { hostRegistryConfigSchema, loadHostRegistryConfig } from './config';
import { startHostRegistry } from './host-registry';

const bootLogger = createLogger({ service: 'host-registry' });
void runUntilSignal('host-registry', bootLogger, async () => {
  const config = loadHostRegistryConfig();
  const logger = createLogger({ service: 'host-registry', level: config.logLevel });
  logger.info('starting', { config: describeConfig(hostRegistryConfigSchema, config) });
  return startHostRegistry(config, logger);
});
