import { describeConfig } from '@corral/config';
import { runUntilSignal } from '@corral/grpc';
import { createLogger } from '@corral/logging';
import { loadSchedulerConfig, schedulerConfigSchema } from './config';
import { startScheduler } from './scheduler';

const bootLogger = createLogger({ service: 'scheduler' });
void runUntilSignal('scheduler', bootLogger, async () => {
  const config = loadSchedulerConfig();
  const logger = createLogger({ service: 'scheduler', level: config.logLevel });
  logger.info('starting', { config: describeConfig(schedulerConfigSchema, config) });
  return startScheduler(config, logger);
});
