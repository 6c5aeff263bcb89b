import { describeConfig } from '@corral/config';
import { runUntilSignal } from '@corral/grpc';
import { createLogger } from '@corral/logging';
import { loadReconcilerConfig, reconcilerConfigSchema } from './config';
import { startReconciler } from './reconciler';

const bootLogger = createLogger({ service: 'reconciler' });
void runUntilSignal('reconciler', bootLogger, async () => {
  const config = loadReconcilerConfig();
  const logger = createLogger({ service: 'reconciler', level: config.logLevel });
  logger.info('starting', { config: describeConfig(reconcilerConfigSchema, config) });
  return startReconciler(config, logger);
});
