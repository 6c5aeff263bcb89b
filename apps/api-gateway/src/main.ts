import { describeConfig } from '@corral/config';
import { runUntilSignal } from '@corral/grpc';
import { createLogger } from '@corral/logging';
import { gatewayConfigSchema, loadGatewayConfig } from './config';
import { startGateway } from './gateway';

const bootLogger = createLogger({ service: 'api-gateway' });
void runUntilSignal('api-gateway', bootLogger, async () => {
  const config = loadGatewayConfig();
  const logger = createLogger({ service: 'api-gateway', level: config.logLevel });
  logger.info('starting', { config: describeConfig(gatewayConfigSchema, config) });
  return startGateway(config, { logger });
});
